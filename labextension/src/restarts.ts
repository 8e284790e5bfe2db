/**
 * Carries out the restarts kernels ask for: `%vram restart` (or the `%vram` panel's button)
 * snapshots the namespace and writes a request id into the kernel's status; the server shows it
 * in `/vram/kernels`, and the first browser to see it has the server restart the kernel and
 * restore the snapshot. The server carries out each request once.
 */

import { Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';

import { messageOf, restartKernel } from './api';
import { VramPoller } from './poller';
import { kernelLabel } from './usage';

export class RestartRequests {
  constructor(
    private readonly _poller: VramPoller,
    private readonly _settings: ServerConnection.ISettings
  ) {
    _poller.changed.connect(this._check, this);
  }

  private _check(): void {
    for (const kernel of this._poller.snapshot?.kernels.kernels ?? []) {
      const request = kernel.vram_magic?.restart_request;
      if (!request || this._seen.has(request)) {
        continue;
      }
      this._seen.add(request);
      void this._restart(kernel.id, kernelLabel(kernel), request);
    }
  }

  private async _restart(id: string, name: string, request: string): Promise<void> {
    const note = Notification.emit(
      `Restarting ${name} and restoring its variables…`,
      'in-progress',
      {
        autoClose: false
      }
    );
    try {
      const reply = await restartKernel(this._settings, id, request);
      const restored = reply.restore.text.split('\n')[0];
      Notification.update({
        id: note,
        message: `${name} restarted. ${restored}`,
        type: 'success',
        autoClose: 8000
      });
    } catch (error) {
      Notification.update({ id: note, message: `${name}: ${messageOf(error)}`, type: 'error' });
    }
    this._poller.refresh();
  }

  private readonly _seen = new Set<string>();
}
