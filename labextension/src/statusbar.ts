/** The status-bar item: the current notebook's or console's kernel on its largest GPU, `VRAM 5.1 / 8.0 GiB`. */

import { Widget } from '@lumino/widgets';

import { ICurrentKernel } from './current';
import { formatBytes, formatPart } from './format';
import { VramPoller } from './poller';
import { kernelUsage } from './usage';

export class VramStatus extends Widget {
  constructor(poller: VramPoller, current: ICurrentKernel, onClick: () => void) {
    super();
    this.addClass('vram-magic-status');
    this._poller = poller;
    this._current = current;
    this.node.addEventListener('click', onClick);
    poller.changed.connect(this.refresh, this);
    this.refresh();
  }

  refresh(): void {
    const { snapshot, problem } = this._poller;
    const { id, owner } = this._current;
    const usage = snapshot && id && !problem ? kernelUsage(snapshot, id) : null;
    if (usage) {
      const { bytes, device, total } = usage;
      const free = device.free === null ? '' : `, ${formatBytes(device.free)} free`;
      this._show(
        `VRAM ${formatPart(bytes, total)}`,
        `This ${owner ?? 'notebook'}'s kernel holds ${formatBytes(bytes)} of GPU ${device.index} ` +
          `(${device.name ?? device.uuid}${free}). Click for the VRAM panel.`
      );
    } else {
      this._show('VRAM –', statusUnknown(problem !== null, snapshot?.devices.reason ?? null, id));
    }
  }

  /** Touch the DOM only when the text changed: a poll a second must not redraw the bar. */
  private _show(text: string, title: string): void {
    if (this.node.textContent !== text) {
      this.node.textContent = text;
    }
    if (this.node.title !== title) {
      this.node.title = title;
    }
  }

  private readonly _poller: VramPoller;
  private readonly _current: ICurrentKernel;
}

function statusUnknown(failed: boolean, reason: string | null, kernelId: string | null): string {
  if (failed) {
    return 'GPU memory could not be read; see the VRAM panel.';
  }
  if (reason) {
    return reason;
  }
  return kernelId ? 'Reading GPU memory…' : 'No notebook or console kernel.';
}
