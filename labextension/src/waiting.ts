/**
 * Says when a notebook's variables wait in a snapshot: the server shut its idle kernel down to
 * give its GPU memory back (`c.VramMagic.cull_idle_seconds`), and the notebook's new kernel can
 * have them back with one click. Each kernel is asked about once per notebook path.
 */

import { Notification } from '@jupyterlab/apputils';

import { IKernel, IRestoreReply, messageOf, request } from './api';
import { IWaitingSnapshot, waitingMessage, waitingQuestion } from './culled';
import { KernelWatcher } from './watcher';

export class WaitingSnapshots extends KernelWatcher {
  protected keyOf(kernel: IKernel): string | undefined {
    return waitingQuestion(kernel);
  }

  protected act(kernel: IKernel): Promise<void> {
    const path = kernel.session?.path ?? '';
    return this._offer(kernel.id, path, kernel.session?.name ?? path);
  }

  private async _offer(kernelId: string, path: string, name: string): Promise<void> {
    let found: { snapshot: IWaitingSnapshot | null };
    try {
      found = await request(this._settings, `waiting?path=${encodeURIComponent(path)}`);
    } catch {
      return; // a server without culling: nothing waits
    }
    const snapshot = found.snapshot;
    if (!snapshot) {
      return;
    }
    const note = Notification.info(waitingMessage(name, snapshot), {
      autoClose: false,
      actions: [
        {
          label: 'Restore',
          caption: 'Load the variables into the notebook’s kernel',
          callback: (event: MouseEvent) => {
            event.preventDefault(); // keep the toast: it says how the restore went
            void this._restore(note, kernelId, name);
          }
        }
      ]
    });
  }

  private async _restore(note: string, kernelId: string, name: string): Promise<void> {
    Notification.update({ id: note, message: `Restoring ${name}…`, type: 'in-progress' });
    try {
      const reply = await request<IRestoreReply>(
        this._settings,
        `kernels/${encodeURIComponent(kernelId)}/restore-waiting`,
        { method: 'POST', body: '{}' }
      );
      const message = `${name}: ${reply.text.split('\n')[0]}`;
      Notification.update({ id: note, message, type: 'success', autoClose: 8000 });
    } catch (error) {
      Notification.update({ id: note, message: `${name}: ${messageOf(error)}`, type: 'error' });
    }
    this._poller.refresh();
  }
}
