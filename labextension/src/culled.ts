/** The words for a notebook whose idle kernel the server shut down, leaving a snapshot. */

import type { IKernel } from './api';
import { formatBytes } from './format';

/** A snapshot left for a notebook (`GET /vram/waiting?path=`). */
export interface IWaitingSnapshot {
  id: string;
  created: string;
  names: number;
  nbytes: number;
}

export function waitingMessage(notebook: string, snapshot: IWaitingSnapshot): string {
  return (
    `${notebook}: its idle kernel was shut down to give its GPU memory back; ` +
    `${snapshot.names} variables (${formatBytes(snapshot.nbytes)}) wait in snapshot ${snapshot.id}.`
  );
}

/**
 * What a kernel's reading asks the server: whether a snapshot waits for its notebook. Asked once
 * per kernel and path, not per kernel: JupyterLab starts a notebook's kernel under a provisional
 * session path (a UUID) and renames the session to the notebook's path a moment later.
 */
export function waitingQuestion(kernel: IKernel): string | undefined {
  const path = kernel.session?.path;
  return path ? `${kernel.id}\n${path}` : undefined;
}
