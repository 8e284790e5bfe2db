/** The right-sidebar panel: a gauge per GPU, then the server's kernels, largest first. */

import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Kernel, ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { freeKernel, IKernel, restartKernel } from './api';
import { ICurrentKernel } from './current';
import { element, syncChildren } from './dom';
import { Gauge } from './gauge';
import { IKernelActions, KernelRow } from './kernels';
import { Problem, VramPoller } from './poller';
import { KernelHistory } from './sparkline';
import { gaugeParts, kernelLabel } from './usage';

export interface ISidebarOptions {
  poller: VramPoller;
  serverSettings: ServerConnection.ISettings;
  kernels: Kernel.IManager;
  /** The kernel of the current notebook or console. */
  current: ICurrentKernel;
}

export class VramSidebar extends Widget {
  constructor(options: ISidebarOptions) {
    super();
    this.addClass('vram-magic-sidebar');
    this._options = options;
    const { serverSettings, kernels, poller } = options;
    this._actions = {
      free: id => freeKernel(serverSettings, id),
      restart: id => restartKernel(serverSettings, id),
      shutdown: kernel => shutdown(kernels, kernel),
      done: () => poller.refresh()
    };
    this._kernelsHeading.append(this._count);
    this.node.append(
      element('h2', 'vram-magic-heading', 'GPU memory'),
      this._banner,
      this._gauges,
      this._kernelsHeading,
      this._kernelList,
      this._empty
    );
    poller.changed.connect(this._remember, this);
    poller.changed.connect(this.refresh, this);
  }

  /** Every reading goes into the sparklines, also while the panel is hidden. */
  private _remember(): void {
    const { snapshot, problem } = this._options.poller;
    if (snapshot && !problem) {
      this._history.record(snapshot.kernels.kernels, Date.now() / 1000);
    }
  }

  /** Draw again; only while visible, and once more when shown. */
  refresh(): void {
    if (this.isVisible) {
      this.update();
    }
  }

  protected onAfterShow(): void {
    this.update();
  }

  protected onUpdateRequest(): void {
    const { poller, current } = this._options;
    const { snapshot, problem } = poller;
    this._showBanner(problem, snapshot === null);
    this.toggleClass('vram-magic-stale', problem !== null);
    const nothing = problem?.kind === 'missing' || snapshot === null;
    this._kernelsHeading.classList.toggle('vram-magic-hidden', nothing);
    if (nothing) {
      syncChildren(this._gauges, []);
      syncChildren(this._kernelList, []);
      this._count.textContent = '';
      this._empty.textContent = '';
      return;
    }
    const currentId = current.id;
    const { devices, reason } = snapshot.devices;
    const { kernels } = snapshot.kernels;
    const gauges = devices.map(device => {
      const gauge = this._gauge(device.uuid);
      gauge.update(device, gaugeParts(device, kernels, currentId), current.owner);
      return gauge.node;
    });
    if (!devices.length) {
      this._noGpu.textContent = reason ?? 'No GPU visible.';
      gauges.push(this._noGpu);
    }
    syncChildren(this._gauges, gauges);
    const rows = kernels.map(kernel => {
      const row = this._row(kernel);
      row.update(kernel, kernel.id === currentId, this._history.points(kernel.id));
      return row.node;
    });
    syncChildren(this._kernelList, rows);
    this._count.textContent = String(kernels.length);
    this._empty.textContent = kernels.length ? '' : 'No kernels are running on this server.';
    this._forget(new Set(devices.map(d => d.uuid)), new Set(kernels.map(k => k.id)));
  }

  private _showBanner(problem: Problem | null, loading: boolean): void {
    const banner = this._banner;
    banner.replaceChildren();
    banner.className = 'vram-magic-banner';
    if (problem?.kind === 'missing') {
      banner.classList.add('vram-magic-error');
      const hint = element('div', '');
      hint.append(
        'Run ',
        element('code', '', 'jupyter server extension enable vram_magic'),
        ', then restart Jupyter.'
      );
      banner.append(
        element(
          'div',
          'vram-magic-banner-title',
          'The server extension vram_magic is not enabled.'
        ),
        hint
      );
    } else if (problem?.kind === 'failed') {
      banner.classList.add('vram-magic-warning');
      banner.append(
        element('div', 'vram-magic-banner-title', 'Could not read GPU memory; retrying.'),
        element('div', '', problem.message)
      );
    } else if (loading) {
      banner.append(element('div', '', 'Reading GPU memory…'));
    } else {
      banner.classList.add('vram-magic-hidden');
    }
  }

  private _gauge(uuid: string): Gauge {
    let gauge = this._gaugeByUuid.get(uuid);
    if (!gauge) {
      gauge = new Gauge();
      this._gaugeByUuid.set(uuid, gauge);
    }
    return gauge;
  }

  private _row(kernel: IKernel): KernelRow {
    let row = this._rowById.get(kernel.id);
    if (!row) {
      row = new KernelRow(kernel, this._actions);
      this._rowById.set(kernel.id, row);
    }
    return row;
  }

  /** Drop the views of GPUs and kernels that are gone. */
  private _forget(uuids: Set<string>, ids: Set<string>): void {
    for (const uuid of this._gaugeByUuid.keys()) {
      if (!uuids.has(uuid)) {
        this._gaugeByUuid.delete(uuid);
      }
    }
    for (const id of this._rowById.keys()) {
      if (!ids.has(id)) {
        this._rowById.delete(id);
      }
    }
  }

  private readonly _options: ISidebarOptions;
  private readonly _actions: IKernelActions;
  private readonly _banner = element('div', 'vram-magic-banner');
  private readonly _gauges = element('div', 'vram-magic-gauges');
  private readonly _noGpu = element('div', 'vram-magic-note');
  private readonly _kernelsHeading = element('h2', 'vram-magic-heading', 'Kernels');
  private readonly _count = element('span', 'vram-magic-count');
  private readonly _kernelList = element('ul', 'vram-magic-kernels');
  private readonly _empty = element('div', 'vram-magic-note');
  private readonly _gaugeByUuid = new Map<string, Gauge>();
  private readonly _rowById = new Map<string, KernelRow>();
  private readonly _history = new KernelHistory();
}

/** Shut the kernel down once the user confirms: its variables are lost. */
async function shutdown(kernels: Kernel.IManager, kernel: IKernel): Promise<void> {
  const result = await showDialog({
    title: 'Shut down kernel?',
    body: `The kernel of ${kernelLabel(kernel)} stops and its variables are lost.`,
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Shut Down' })]
  });
  if (result.button.accept) {
    await kernels.shutdown(kernel.id);
  }
}
