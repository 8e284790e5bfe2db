/**
 * JupyterLab plugin: the VRAM sidebar and status-bar item, fed by one poll of the server. In
 * Notebook 7 the sidebar is a right side panel and the item sits in the menu bar's row.
 */

import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IConsoleTracker } from '@jupyterlab/console';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { CurrentKernel } from './current';
import { VramPoller } from './poller';
import { RestartRequests } from './restarts';
import { followSettings } from './settings';
import { VramSidebar } from './sidebar';
import { VramStatus } from './statusbar';
import { WaitingSnapshots } from './waiting';

const PLUGIN_ID = 'vram-magic:plugin';
const SIDEBAR_ID = 'vram-magic-sidebar';
const DEFAULT_INTERVAL_S = 1;

const chipSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path fill-rule="evenodd" d="M5 4h14a1 1 0 0 1 1 1v14a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1zm1 2v12h12V6z"/>
    <rect x="8" y="8" width="8" height="8" rx="1"/>
    <path d="M8 1h2v3H8zm6 0h2v3h-2zM8 20h2v3H8zm6 0h2v3h-2zM1 8h3v2H1zm0 6h3v2H1zm19-6h3v2h-3zm0 6h3v2h-3z"/>
  </g>
</svg>`;

const chipIcon = new LabIcon({ name: 'vram-magic:chip', svgstr: chipSvg });

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'GPU memory per device and per kernel, in a sidebar and the status bar.',
  autoStart: true,
  // all optional, so the plugin also loads in Notebook 7 and in trimmed-down shells
  optional: [ILabShell, INotebookTracker, IStatusBar, ISettingRegistry, IConsoleTracker],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell | null,
    notebooks: INotebookTracker | null,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null,
    consoles: IConsoleTracker | null
  ) => {
    const { serviceManager } = app;
    const poller = new VramPoller(serviceManager.serverSettings, DEFAULT_INTERVAL_S);
    new RestartRequests(poller, serviceManager.serverSettings);
    new WaitingSnapshots(poller, serviceManager.serverSettings);
    const current = new CurrentKernel({ notebook: notebooks, console: consoles }, app.shell);

    const sidebar = new VramSidebar({
      poller,
      serverSettings: serviceManager.serverSettings,
      kernels: serviceManager.kernels,
      current
    });
    sidebar.id = SIDEBAR_ID;
    sidebar.title.icon = chipIcon;
    sidebar.title.caption = 'VRAM';
    if (!labShell) {
      // JupyterLab's side tabs show icons only; Notebook 7 lists side panels by their label
      sidebar.title.label = 'VRAM';
    }
    app.shell.add(sidebar, 'right', { rank: 900 });

    const openSidebar = () => app.shell.activateById(SIDEBAR_ID);
    let status: VramStatus | null = null;
    if (statusBar) {
      status = new VramStatus(poller, current, openSidebar);
      statusBar.registerStatusItem(`${PLUGIN_ID}-status`, { item: status, align: 'left', rank: 4 });
    } else if (!labShell) {
      // Notebook 7 has no status bar: its menu bar's row holds such indicators, between the
      // kernel's status (rank 10010) and "Not Trusted" (11000)
      status = new VramStatus(poller, current, openSidebar);
      app.shell.add(status, 'menu', { rank: 10500 });
    }

    current.changed.connect(() => {
      sidebar.refresh();
      status?.refresh();
    });

    if (settingRegistry) {
      void followSettings(settingRegistry, PLUGIN_ID, poller);
    }
  }
};

export default plugin;
