/**
 * Carries out the restarts kernels ask for: `%vram restart` (or the `%vram` panel's button)
 * snapshots the namespace and writes a request id into the kernel's status; the server shows it
 * in `/vram/kernels`, and the first browser to see it has the server restart the kernel and
 * restore the snapshot. The server carries out each request once.
 */

import { Notification } from '@jupyterlab/apputils';

import { IKernel, messageOf, restartKernel } from './api';
import { kernelLabel } from './usage';
import { KernelWatcher } from './watcher';

export class RestartRequests extends KernelWatcher {
  protected keyOf(kernel: IKernel): string | undefined {
    return kernel.vram_magic?.restart_request ?? undefined;
  }

  protected act(kernel: IKernel): Promise<void> {
    return this._restart(kernel.id, kernelLabel(kernel), this.keyOf(kernel) ?? '');
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
}
