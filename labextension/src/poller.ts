/** One poll of the VRAM endpoints that the sidebar and the status bar both draw from. */

import { ServerConnection } from '@jupyterlab/services';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { fetchSnapshot, ISnapshot, messageOf, statusOf } from './api';

/** Why the latest reading failed: no server extension (404) or any other error. */
export type Problem = { kind: 'missing' } | { kind: 'failed'; message: string };

/** Longest wait between tries while the server keeps failing (unless the interval is longer). */
const MAX_BACKOFF_MS = 30_000;

function frequency(intervalSeconds: number): IPoll.Frequency {
  const interval = intervalSeconds * 1000;
  return { interval, backoff: true, max: Math.max(interval, MAX_BACKOFF_MS) };
}

export class VramPoller {
  constructor(settings: ServerConnection.ISettings, intervalSeconds: number) {
    this._settings = settings;
    // Poll never starts a tick before the previous one settled, backs off while ticks
    // reject, and stands by while the browser tab is hidden.
    this._poll = new Poll({
      factory: () => this._tick(),
      frequency: frequency(intervalSeconds),
      name: 'vram-magic:poll',
      standby: 'when-hidden'
    });
  }

  /** Emitted after every reading, successful or not. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The latest successful reading; kept while later ones fail, so the view can go stale. */
  get snapshot(): ISnapshot | null {
    return this._snapshot;
  }

  /** Why the latest reading failed, or null when it succeeded. */
  get problem(): Problem | null {
    return this._problem;
  }

  set intervalSeconds(seconds: number) {
    this._poll.frequency = frequency(seconds);
  }

  /** Read now, e.g. after an action changed what the GPUs hold. */
  refresh(): void {
    void this._poll.refresh();
  }

  private async _tick(): Promise<void> {
    try {
      this._snapshot = await fetchSnapshot(this._settings);
      this._problem = null;
    } catch (error) {
      this._problem =
        statusOf(error) === 404
          ? { kind: 'missing' }
          : { kind: 'failed', message: messageOf(error) };
      throw error; // a rejected tick is what makes Poll back off
    } finally {
      this._changed.emit();
    }
  }

  private readonly _settings: ServerConnection.ISettings;
  private readonly _poll: Poll;
  private readonly _changed = new Signal<this, void>(this);
  private _snapshot: ISnapshot | null = null;
  private _problem: Problem | null = null;
}
