import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { IKernel } from '../src/api';
import { waitingMessage, waitingQuestion } from '../src/culled';

describe('waitingMessage', () => {
  it('names the notebook, the variables, their size and the snapshot', () => {
    const snapshot = { id: '20261202-013000-ab12', created: '', names: 3, nbytes: 5 * 1024 ** 3 };
    assert.equal(
      waitingMessage('train.ipynb', snapshot),
      'train.ipynb: its idle kernel was shut down to give its GPU memory back; ' +
        '3 variables (5.0 GiB) wait in snapshot 20261202-013000-ab12.'
    );
  });
});

describe('waitingQuestion', () => {
  const kernel = (path: string | null): IKernel => ({
    id: 'k1',
    name: 'python3',
    execution_state: 'starting',
    pid: 1,
    session: path === null ? null : { path, name: 'train.ipynb' },
    devices: [],
    bytes: 0,
    vram_magic: null
  });

  it('asks again once the provisional session path becomes the notebook', () => {
    const provisional = waitingQuestion(kernel('23d6004f-de51-4c40-ac6f-64d5f6125993'));
    const notebook = waitingQuestion(kernel('train.ipynb'));
    assert.ok(provisional && notebook);
    assert.notEqual(provisional, notebook);
    assert.equal(waitingQuestion(kernel('train.ipynb')), notebook);
  });

  it('asks nothing for a kernel without a notebook', () => {
    assert.equal(waitingQuestion(kernel(null)), undefined);
  });
});
