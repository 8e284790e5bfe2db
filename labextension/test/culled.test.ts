import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { waitingMessage } from '../src/culled';

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
