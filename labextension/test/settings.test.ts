import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { Signal } from '@lumino/signaling';

import { followSettings } from '../src/settings';

const PLUGIN_ID = 'vram-magic:plugin';

class FakeSettings {
  readonly changed = new Signal<this, void>(this);
  constructor(public interval: unknown) {}

  get(key: string): { composite: unknown } {
    assert.equal(key, 'refreshInterval');
    return { composite: this.interval };
  }

  set(interval: unknown): void {
    this.interval = interval;
    this.changed.emit();
  }
}

function registry(load: (id: string) => Promise<unknown>): ISettingRegistry {
  return { load } as unknown as ISettingRegistry;
}

describe('followSettings', () => {
  it('applies the refresh interval now and on every change', async () => {
    const settings = new FakeSettings(2.5);
    const target = { intervalSeconds: 1 };
    await followSettings(
      registry(async () => settings),
      PLUGIN_ID,
      target
    );
    assert.equal(target.intervalSeconds, 2.5);
    settings.set(10);
    assert.equal(target.intervalSeconds, 10);
  });

  it('keeps the interval it has for a value that is no number of seconds', async () => {
    const settings = new FakeSettings(undefined);
    const target = { intervalSeconds: 1 };
    await followSettings(
      registry(async () => settings),
      PLUGIN_ID,
      target
    );
    settings.set(0);
    settings.set('fast');
    assert.equal(target.intervalSeconds, 1);
  });

  it('warns and keeps the defaults when the settings cannot be loaded', async t => {
    const warn = t.mock.method(console, 'warn', () => {});
    const failure = new Error('Schema not found: vram-magic:plugin');
    const target = { intervalSeconds: 1 };
    const load = t.mock.fn(async (_id: string): Promise<unknown> => {
      throw failure;
    });

    await followSettings(registry(load), PLUGIN_ID, target); // resolves: nothing to catch

    assert.equal(load.mock.calls[0].arguments[0], PLUGIN_ID);
    assert.equal(target.intervalSeconds, 1);
    assert.equal(warn.mock.callCount(), 1);
    const [message, error] = warn.mock.calls[0].arguments;
    assert.match(String(message), /vram-magic: settings not loaded/);
    assert.equal(error, failure);
  });
});
