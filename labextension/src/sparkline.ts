/** Each kernel's memory over the last minutes, remembered from the sidebar's polls. */

import { IKernel } from './api';

/** How far back a sparkline reaches. */
export const SPARKLINE_SECONDS = 300;

export interface IPoint {
  /** Seconds, on the browser's clock. */
  t: number;
  bytes: number;
}

export class KernelHistory {
  constructor(seconds = SPARKLINE_SECONDS) {
    this._seconds = seconds;
  }

  /** Remember every kernel's bytes at `t`; forget kernels that are gone and old points. */
  record(kernels: IKernel[], t: number): void {
    const ids = new Set<string>();
    for (const kernel of kernels) {
      ids.add(kernel.id);
      const points = this._points.get(kernel.id) ?? [];
      points.push({ t, bytes: kernel.bytes });
      while (points.length && points[0].t < t - this._seconds) {
        points.shift();
      }
      this._points.set(kernel.id, points);
    }
    for (const id of [...this._points.keys()]) {
      if (!ids.has(id)) {
        this._points.delete(id);
      }
    }
  }

  points(id: string): IPoint[] {
    return this._points.get(id) ?? [];
  }

  private readonly _seconds: number;
  private readonly _points = new Map<string, IPoint[]>();
}

/** A young history spans at least this many seconds, so its first points do not fill it. */
const MIN_SECONDS = 60;

/**
 * An SVG polyline's points for `points` in a `width` x `height` box: time runs over the last
 * `seconds` up to the latest point (by default the history's age, between a minute and
 * `SPARKLINE_SECONDS`), bytes from 0 to `scale` or the largest point.
 */
export function sparklinePoints(
  points: IPoint[],
  width: number,
  height: number,
  scale: number,
  seconds?: number
): string {
  if (!points.length) {
    return '';
  }
  const end = points[points.length - 1].t;
  const age = end - points[0].t;
  const span = seconds ?? Math.min(SPARKLINE_SECONDS, Math.max(MIN_SECONDS, age));
  const top = Math.max(scale, ...points.map(p => p.bytes), 1);
  return points
    .map(p => {
      const x = width - (width * (end - p.t)) / span;
      const y = height - 1 - ((height - 2) * p.bytes) / top;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}
