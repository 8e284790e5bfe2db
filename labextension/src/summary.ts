/** Short summaries of what Free and Restart & restore did; the full tables stay one click away. */

import { IFreeReply, IRestartReply } from './api';
import { formatBytes } from './format';

export interface ISummary {
  /** One line: the outcome. */
  headline: string;
  /** A few lines beneath it: what did not come back and why, where the time went. */
  lines: string[];
  /** The kernel's own tables, shown on request. */
  details: string;
}

/** Holders named in a Free summary; the rest are counted. */
const HOLDERS_SHOWN = 3;

function seconds(value: number): string {
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} s`;
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

export function freeSummary(reply: IFreeReply): ISummary {
  const released = reply.released ?? [];
  const lines = released
    .slice(0, HOLDERS_SHOWN)
    .map(item => `${item.holder}: ${formatBytes(item.bytes)}`);
  if (released.length > HOLDERS_SHOWN) {
    lines.push(`and ${plural(released.length - HOLDERS_SHOWN, 'more holder')}`);
  }
  const from = released.length ? ` from ${plural(released.length, 'holder')}` : '';
  return { headline: `Freed ${formatBytes(reply.freed)}${from}`, lines, details: reply.text };
}

export function restartSummary(reply: IRestartReply): ISummary {
  const { snapshot, restore } = reply;
  const back = restore.restored.length;
  const saved = snapshot ? snapshot.saved.length : back + restore.skipped.length;
  const headline =
    restore.id === null
      ? 'Restarted; nothing to restore'
      : `Restarted: ${back} of ${plural(saved, 'variable')} back`;
  const lines: string[] = [];
  for (const item of snapshot?.unsaved ?? []) {
    lines.push(`not saved: ${item.name} (${item.reason})`);
  }
  for (const item of restore.skipped) {
    lines.push(`skipped: ${item.name} (${item.reason})`);
  }
  const parts: string[] = [];
  if (snapshot) {
    parts.push(`snapshot ${seconds(snapshot.seconds)}`);
  }
  parts.push(`kernel restart ${seconds(reply.restart_seconds)}`);
  if (restore.seconds !== undefined) {
    const imports = restore.import_seconds ?? 0;
    const tensors = restore.tensor_seconds ?? 0;
    const rest = Math.max(0, restore.seconds - imports - tensors);
    parts.push(
      `restore ${seconds(restore.seconds)}: imports ${seconds(imports)}, ` +
        `tensors ${seconds(tensors)}, the rest ${seconds(rest)}`
    );
  }
  const total = (snapshot?.seconds ?? 0) + reply.restart_seconds + (restore.seconds ?? 0);
  lines.push(`${seconds(total)} in all: ${parts.join('; ')}`);
  return { headline, lines, details: reply.text };
}
