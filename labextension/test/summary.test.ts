import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { IRestartReply } from '../src/api';
import { freeSummary, restartSummary } from '../src/summary';

const MIB = 1024 ** 2;

function restart(overrides: Partial<IRestartReply> = {}): IRestartReply {
  return {
    kernel_id: 'k1',
    snapshot: {
      id: 's1',
      saved: ['a', 'b', 'c', 'model', 'log'],
      unsaved: [{ name: 'batches', reason: 'generator: create it again' }],
      bytes: 300 * MIB,
      seconds: 0.34,
      text: 'snapshot table'
    },
    restore: {
      id: 's1',
      restored: ['a', 'b', 'c', 'model'],
      skipped: [{ name: 'log', reason: 'could not be restored: OSError: gone' }],
      seconds: 6.5,
      import_seconds: 5.9,
      tensor_seconds: 0.4,
      text: 'restore table'
    },
    restart_seconds: 2.3,
    text: 'snapshot table\nrestore table',
    ...overrides
  };
}

describe('restartSummary', () => {
  it('counts what came back, names each skipped variable with its reason', () => {
    const summary = restartSummary(restart());
    assert.equal(summary.headline, 'Restarted: 4 of 5 variables back');
    assert.ok(summary.lines.includes('skipped: log (could not be restored: OSError: gone)'));
    assert.ok(summary.lines.includes('not saved: batches (generator: create it again)'));
    assert.equal(summary.details, 'snapshot table\nrestore table');
  });

  it('says where the time went: snapshot, restart, imports and tensors', () => {
    const time = restartSummary(restart()).lines.at(-1);
    assert.equal(
      time,
      '9.1 s in all: snapshot 0.3 s; kernel restart 2.3 s; restore 6.5 s: imports 5.9 s, ' +
        'tensors 0.4 s, the rest 0.2 s'
    );
  });

  it('reads a restart the kernel asked for (no snapshot taken by the server)', () => {
    const summary = restartSummary(restart({ snapshot: null }));
    assert.equal(summary.headline, 'Restarted: 4 of 5 variables back');
    assert.match(summary.lines.at(-1)!, /^8\.8 s in all: kernel restart/);
  });

  it('says so when there was nothing to restore', () => {
    const summary = restartSummary(
      restart({ snapshot: null, restore: { id: null, restored: [], skipped: [], text: 'nothing' } })
    );
    assert.equal(summary.headline, 'Restarted; nothing to restore');
  });
});

describe('freeSummary', () => {
  it('names the largest holders and counts the rest', () => {
    const released = [400, 300, 200, 100].map((size, i) => ({
      holder: `h${i}`,
      bytes: size * MIB
    }));
    const summary = freeSummary({ kernel_id: 'k1', freed: 1000 * MIB, released, text: 'table' });
    assert.equal(summary.headline, 'Freed 1000.0 MiB from 4 holders');
    assert.deepEqual(summary.lines, [
      'h0: 400.0 MiB',
      'h1: 300.0 MiB',
      'h2: 200.0 MiB',
      'and 1 more holder'
    ]);
  });

  it('reads a reply without the list', () => {
    const summary = freeSummary({ kernel_id: 'k1', freed: 0, released: [], text: '' });
    assert.equal(summary.headline, 'Freed 0 B');
    assert.deepEqual(summary.lines, []);
  });
});
