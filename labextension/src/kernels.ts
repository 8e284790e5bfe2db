/** One kernel's row in the sidebar: its name and memory, and the Free / Restart / Shut down buttons. */

import { IFreeReply, IKernel, IRestartReply, messageOf } from './api';
import { element } from './dom';
import { formatBytes } from './format';
import { IPoint, SPARKLINE_SECONDS, sparklinePoints } from './sparkline';
import { freeSummary, ISummary, restartSummary } from './summary';
import { kernelLabel } from './usage';

/** What the buttons do; the sidebar supplies them. */
export interface IKernelActions {
  free(id: string): Promise<IFreeReply>;
  restart(id: string): Promise<IRestartReply>;
  shutdown(kernel: IKernel): Promise<void>;
  /** Called after any action, to read the GPUs again. */
  done(): void;
}

type Action = 'free' | 'restart' | 'shutdown';

const BUTTONS: { action: Action; label: string; pending: string }[] = [
  { action: 'free', label: 'Free', pending: 'Freeing…' },
  { action: 'restart', label: 'Restart & restore', pending: 'Restarting…' },
  { action: 'shutdown', label: 'Shut down', pending: 'Shutting down…' }
];

const READY = new Set(['idle', 'starting']);

/** A few of the largest tensors or objects the kernel reported. */
const TOP_SHOWN = 3;

const SPARK_WIDTH = 120;
const SPARK_HEIGHT = 18;
const SVG = 'http://www.w3.org/2000/svg';

export class KernelRow {
  readonly node = element('li', 'vram-magic-kernel');

  constructor(kernel: IKernel, actions: IKernelActions) {
    this._kernel = kernel;
    this._actions = actions;
    this.node.dataset.kernelId = kernel.id;
    const head = element('div', 'vram-magic-kernel-head');
    head.append(this._name, this._state, this._bytes);
    const buttons = element('div', 'vram-magic-actions');
    for (const { action, label } of BUTTONS) {
      const button = element('button', 'vram-magic-button', label);
      button.type = 'button';
      button.dataset.action = action;
      button.addEventListener('click', () => void this._run(action));
      buttons.append(button);
      this._buttons.set(action, button);
    }
    this._spark.setAttribute('class', 'vram-magic-sparkline');
    this._spark.setAttribute('height', String(SPARK_HEIGHT));
    this._spark.setAttribute('viewBox', `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
    this._spark.setAttribute('preserveAspectRatio', 'none'); // as wide as the row
    this._spark.append(this._sparkLine, this._sparkTitle);
    this.node.append(head, this._spark, this._detail, buttons, this._result);
  }

  /** `points`: the kernel's bytes over the last minutes, for its sparkline. */
  update(kernel: IKernel, current: boolean, points: IPoint[] = []): void {
    this._kernel = kernel;
    this.node.classList.toggle('vram-magic-current', current);
    this._name.textContent = kernelLabel(kernel);
    this._name.title = [
      kernel.session?.path,
      `kernel ${kernel.id}`,
      kernel.pid && `pid ${kernel.pid}`
    ]
      .filter(Boolean)
      .join('\n');
    const state = kernel.execution_state;
    this._state.textContent = state === 'idle' ? '' : state;
    this._state.dataset.state = state;
    this._bytes.textContent = formatBytes(kernel.bytes);
    this._detail.textContent = details(kernel).join(' · ');
    this._drawSparkline(points);
    this._renderButtons();
  }

  private _drawSparkline(points: IPoint[]): void {
    this._sparkLine.setAttribute('points', sparklinePoints(points, SPARK_WIDTH, SPARK_HEIGHT, 0));
    const largest = Math.max(0, ...points.map(p => p.bytes));
    const minutes = Math.round(SPARKLINE_SECONDS / 60);
    this._sparkTitle.textContent = `This kernel's GPU memory over the last ${minutes} minutes at most (up to ${formatBytes(largest)})`;
  }

  private _renderButtons(): void {
    const state = this._kernel.execution_state;
    for (const { action, label, pending } of BUTTONS) {
      const button = this._buttons.get(action)!;
      button.textContent = this._pending === action ? pending : label;
      let why = '';
      if (action !== 'shutdown' && !READY.has(state)) {
        // the server takes these only from a kernel between cells (409 otherwise); a kernel
        // started without a browser tab stays "starting" on the server, yet answers
        why = `The kernel is ${state}`;
      }
      button.disabled = this._pending !== null || why !== '';
      button.title = why;
    }
  }

  private async _run(action: Action): Promise<void> {
    const kernel = this._kernel;
    this._pending = action;
    this._renderButtons();
    try {
      if (action === 'free') {
        this._show(freeSummary(await this._actions.free(kernel.id)), false);
      } else if (action === 'restart') {
        this._show(restartSummary(await this._actions.restart(kernel.id)), false);
      } else {
        await this._actions.shutdown(kernel);
      }
    } catch (error) {
      const label = BUTTONS.find(b => b.action === action)!.label;
      this._show({ headline: `${label} failed`, lines: [messageOf(error)], details: '' }, true);
    } finally {
      this._pending = null;
      this._renderButtons();
      this._actions.done();
    }
  }

  /** What the last action did, in short, with the kernel's full tables behind a click; it
   * stays until dismissed. */
  private _show(summary: ISummary, failed: boolean): void {
    const close = element('button', 'vram-magic-result-close', '×');
    close.type = 'button';
    close.title = 'Dismiss';
    close.addEventListener('click', () => this._result.replaceChildren());
    this._result.classList.toggle('vram-magic-failed', failed);
    const text = element('div', 'vram-magic-result-text');
    text.append(element('div', 'vram-magic-result-headline', summary.headline));
    for (const line of summary.lines) {
      text.append(element('div', 'vram-magic-result-line', line));
    }
    if (summary.details) {
      const more = element('details', 'vram-magic-result-details');
      more.append(
        element('summary', '', 'Full report'),
        element('pre', 'vram-magic-result-tables', summary.details)
      );
      text.append(more);
    }
    this._result.replaceChildren(text, close);
  }

  private _kernel: IKernel;
  private _pending: Action | null = null;
  private readonly _actions: IKernelActions;
  private readonly _name = element('span', 'vram-magic-kernel-name');
  private readonly _state = element('span', 'vram-magic-kernel-state');
  private readonly _bytes = element('span', 'vram-magic-kernel-bytes');
  private readonly _detail = element('div', 'vram-magic-kernel-detail');
  private readonly _spark = document.createElementNS(SVG, 'svg');
  private readonly _sparkLine = document.createElementNS(SVG, 'polyline');
  private readonly _sparkTitle = document.createElementNS(SVG, 'title');
  private readonly _result = element('div', 'vram-magic-result');
  private readonly _buttons = new Map<Action, HTMLButtonElement>();
}

/** Where the kernel's memory is, and what vram_magic inside it last said about it. */
function details(kernel: IKernel): string[] {
  const parts = kernel.devices.map(held => `GPU ${held.index ?? '?'} ${formatBytes(held.bytes)}`);
  const report = kernel.vram_magic;
  if (report) {
    for (const torch of report.torch) {
      parts.push(
        `${torch.device}: ${formatBytes(torch.allocated)} allocated, ` +
          `${formatBytes(torch.reserved)} reserved`
      );
    }
    if (report.top.length) {
      const top = report.top.slice(0, TOP_SHOWN);
      parts.push(
        'largest: ' + top.map(item => `${item.name} ${formatBytes(item.bytes)}`).join(', ')
      );
    }
    if (report.limit !== null) {
      parts.push(`limit ${formatBytes(report.limit)}`);
    }
  }
  return parts;
}
