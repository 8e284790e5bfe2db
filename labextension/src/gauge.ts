/** One GPU's gauge: a stacked bar with a legend, updated in place on every reading. */

import { IDevice } from './api';
import { KernelOwner } from './current';
import { element } from './dom';
import { formatBytes, formatPart } from './format';
import { IGaugeParts } from './usage';

const PARTS: { key: keyof IGaugeParts; label: string }[] = [
  { key: 'current', label: 'This notebook' },
  { key: 'kernels', label: 'Other kernels' },
  { key: 'others', label: 'Other processes' },
  { key: 'free', label: 'Free' }
];

export class Gauge {
  readonly node = element('div', 'vram-magic-gauge');

  constructor() {
    const bar = element('div', 'vram-magic-bar');
    const legend = element('ul', 'vram-magic-legend');
    for (const { key, label } of PARTS) {
      const segment = element('div', 'vram-magic-segment');
      segment.dataset.part = key;
      bar.append(segment);
      const entry = element('li', 'vram-magic-legend-entry');
      entry.dataset.part = key;
      const value = element('span', 'vram-magic-legend-value');
      const name = element('span', 'vram-magic-legend-label', label);
      entry.append(element('span', 'vram-magic-swatch'), name, value);
      legend.append(entry);
      this._segments.set(key, segment);
      this._labels.set(key, name);
      this._values.set(key, value);
    }
    this.node.append(this._name, this._total, bar, legend, this._note);
  }

  /** `owner`: whose kernel `parts.current` is, for its label. */
  update(device: IDevice, parts: IGaugeParts, owner: KernelOwner | null): void {
    const { total, used, utilization } = device;
    this.node.dataset.uuid = device.uuid;
    this.node.dataset.index = device.index;
    // most names start "NVIDIA ", which a narrow sidebar cannot spare; the tooltip keeps it
    const model = device.name?.replace(/^NVIDIA /, '');
    this._name.textContent = `GPU ${device.index}` + (model ? ` · ${model}` : '');
    this._name.title = [device.name, device.uuid].filter(Boolean).join('\n');
    const busy = utilization === null ? '' : ` · ${utilization}% busy`;
    this._total.textContent =
      total === null ? 'memory unknown' : `${formatPart(used ?? 0, total)} used${busy}`;
    for (const { key, label: fixed } of PARTS) {
      const label = key === 'current' && owner === 'console' ? 'This console' : fixed;
      this._labels.get(key)!.textContent = label;
      const bytes = parts[key];
      const segment = this._segments.get(key)!;
      segment.style.flexBasis = total ? `${(100 * bytes) / total}%` : '0';
      segment.title = `${label}: ${formatBytes(bytes)}`;
      this._values.get(key)!.textContent = formatBytes(bytes);
    }
    const strangers = device.other_users;
    const notes = [...device.problems];
    if (strangers.count) {
      const processes = `${strangers.count} process${strangers.count === 1 ? '' : 'es'}`;
      notes.unshift(`${processes} of other users hold ${formatBytes(strangers.bytes)}`);
    }
    this._note.textContent = notes.join(' · ');
  }

  private readonly _name = element('div', 'vram-magic-gauge-name');
  private readonly _total = element('div', 'vram-magic-gauge-total');
  private readonly _note = element('div', 'vram-magic-gauge-note');
  private readonly _segments = new Map<keyof IGaugeParts, HTMLElement>();
  private readonly _labels = new Map<keyof IGaugeParts, HTMLElement>();
  private readonly _values = new Map<keyof IGaugeParts, HTMLElement>();
}
