/** The words for a notebook whose idle kernel the server shut down, leaving a snapshot. */

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
