/** The plugin's settings (Settings → VRAM), followed as they change. */

import { ISettingRegistry } from '@jupyterlab/settingregistry';

/** What the settings set. */
export interface ISettingsTarget {
  intervalSeconds: number;
}

/**
 * Apply the plugin's settings to `target` now and on every change. A failure to load them
 * (a schema the registry rejects, a settings file it cannot read) leaves the defaults in place
 * and says so on the console: the panel works without them.
 */
export async function followSettings(
  registry: ISettingRegistry,
  pluginId: string,
  target: ISettingsTarget
): Promise<void> {
  let settings: ISettingRegistry.ISettings;
  try {
    settings = await registry.load(pluginId);
  } catch (error) {
    console.warn(`vram-magic: settings not loaded, the defaults stay (${pluginId}):`, error);
    return;
  }
  const apply = () => {
    const seconds = settings.get('refreshInterval').composite;
    if (typeof seconds === 'number' && seconds > 0) {
      target.intervalSeconds = seconds;
    }
  };
  apply();
  settings.changed.connect(apply);
}
