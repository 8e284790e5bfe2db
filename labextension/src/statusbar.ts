/** The status-bar item: the current notebook's kernel on its largest GPU, `VRAM 5.1 / 8.0 GiB`. */

import { Widget } from '@lumino/widgets';

import { formatBytes, formatPart } from './format';
import { VramPoller } from './poller';
import { kernelUsage } from './usage';

export class VramStatus extends Widget {
  constructor(poller: VramPoller, currentKernel: () => string | null, onClick: () => void) {
    super();
    this.addClass('vram-magic-status');
    this._poller = poller;
    this._currentKernel = currentKernel;
    this.node.addEventListener('click', onClick);
    poller.changed.connect(this.refresh, this);
    this.refresh();
  }

  refresh(): void {
    const { snapshot, problem } = this._poller;
    const id = this._currentKernel();
    const usage = snapshot && id && !problem ? kernelUsage(snapshot, id) : null;
    if (usage) {
      const { bytes, device, total } = usage;
      const free = device.free === null ? '' : `, ${formatBytes(device.free)} free`;
      this.node.textContent = `VRAM ${formatPart(bytes, total)}`;
      this.node.title =
        `This notebook's kernel holds ${formatBytes(bytes)} of GPU ${device.index} ` +
        `(${device.name ?? device.uuid}${free}). Click for the VRAM panel.`;
    } else {
      this.node.textContent = 'VRAM –';
      this.node.title = statusUnknown(problem !== null, snapshot?.devices.reason ?? null, id);
    }
  }

  private readonly _poller: VramPoller;
  private readonly _currentKernel: () => string | null;
}

function statusUnknown(failed: boolean, reason: string | null, kernelId: string | null): string {
  if (failed) {
    return 'GPU memory could not be read; see the VRAM panel.';
  }
  if (reason) {
    return reason;
  }
  return kernelId ? 'Reading GPU memory…' : 'No notebook kernel.';
}
