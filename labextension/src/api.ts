/** The server extension's REST API under `<base url>/vram/`: reply types and requests. */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/*
 * The reply interfaces below are what vram_magic/server/usage.py and handlers.py send, field for
 * field: tests/test_server_contract.py parses every interface of this file and checks the JSON
 * of /vram/devices and /vram/kernels against them, both ways. Keep them to what its parser reads:
 * fields typed with string, number, boolean, null, `true`/`false`, string literals, arrays
 * (`T[]`), inline `{ ... }` objects and the `I...` interfaces here, joined by `|`; `?` for a
 * field that may be absent; no generics, `extends`, `any`/`unknown` or index signatures.
 */

/** One of this user's processes on a GPU; `kernel_id` names the kernel it is, if any. */
export interface IGpuProcess {
  pid: number;
  /** Null where NVML withholds the figure. */
  bytes: number | null;
  /** The process's executable name (`python3`), as the OS reports it. */
  name: string | null;
  kernel_id: string | null;
}

/** A GPU as NVML numbers it: `index` is `"3"`, or `"3:1"` for a MIG slice. */
export interface IDevice {
  index: string;
  name: string | null;
  uuid: string;
  /** Null when NVML could not read the memory; `problems` says why. */
  total: number | null;
  used: number | null;
  free: number | null;
  utilization: number | null;
  processes: IGpuProcess[];
  /** Processes of other users: NVML gives their memory but not who they are. */
  other_users: { count: number; bytes: number };
  /** What NVML could not read about this GPU; empty when nothing failed. */
  problems: string[];
}

export interface IDevicesReply {
  devices: IDevice[];
  /** Why `devices` is empty, e.g. "no NVIDIA GPU visible: ...". */
  reason: string | null;
}

export interface IKernelDevice {
  /** Null when the kernel reported memory on a GPU whose UUID torch could not read. */
  uuid: string | null;
  /** Null when only the kernel itself reported the memory and NVML does not list the GPU. */
  index: string | null;
  bytes: number;
  source: 'nvml' | 'kernel';
}

/** What vram_magic, when loaded in the kernel, last reported from inside it. */
export interface IKernelReport {
  updated: number;
  torch: { device: string; uuid: string | null; allocated: number; reserved: number }[];
  top: { name: string; bytes: number }[];
  limit: number | null;
  /** Set while the kernel asks to be restarted and restored (`%vram restart`). */
  restart_request: string | null;
}

export interface IKernel {
  id: string;
  name: string;
  execution_state: string;
  pid: number | null;
  session: { path: string; name: string } | null;
  devices: IKernelDevice[];
  bytes: number;
  vram_magic: IKernelReport | null;
}

export interface IKernelsReply {
  /** Largest `bytes` first. */
  kernels: IKernel[];
}

export interface IFreeReply {
  kernel_id: string;
  freed: number;
  /** What each holder gave back, largest first. */
  released: { holder: string; bytes: number }[];
  text: string;
}

/** One reading of both endpoints. */
export interface ISnapshot {
  devices: IDevicesReply;
  kernels: IKernelsReply;
}

export async function request<T>(
  settings: ServerConnection.ISettings,
  path: string,
  init: RequestInit = {}
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'vram', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // a 404 from a server without the extension is an HTML page
  }
  if (!response.ok) {
    const message = (body as { message?: string } | null)?.message;
    throw new ServerConnection.ResponseError(
      response,
      message || `${response.status} ${response.statusText}`.trim()
    );
  }
  return body as T;
}

export async function fetchSnapshot(settings: ServerConnection.ISettings): Promise<ISnapshot> {
  const [devices, kernels] = await Promise.all([
    request<IDevicesReply>(settings, 'devices'),
    request<IKernelsReply>(settings, 'kernels')
  ]);
  return { devices, kernels };
}

export function freeKernel(settings: ServerConnection.ISettings, id: string): Promise<IFreeReply> {
  return request<IFreeReply>(settings, `kernels/${encodeURIComponent(id)}/free`, {
    method: 'POST'
  });
}

/** A variable that was not saved, or not restored, and why. */
export interface IUnsaved {
  name: string;
  reason: string;
}

/** A snapshot the kernel took: its names, what it could not save, its size and time. */
export interface ISnapshotReply {
  id: string;
  saved: string[];
  unsaved: IUnsaved[];
  bytes: number;
  seconds: number;
  text: string;
}

/** A restore in the new kernel; `import_seconds` and `tensor_seconds` are parts of `seconds`. */
export interface IRestoreReply {
  id: string | null;
  restored: string[];
  skipped: IUnsaved[];
  seconds?: number;
  import_seconds?: number;
  tensor_seconds?: number;
  text: string;
}

/** What a restart brought back: the snapshot (when the server took it) and the restore. */
export interface IRestartReply {
  kernel_id: string;
  snapshot: ISnapshotReply | null;
  restore: IRestoreReply;
  /** The kernel's stop and start. */
  restart_seconds: number;
  text: string;
}

/** Snapshot, restart and restore the kernel; `requestId`: carry out one the kernel asked for. */
export function restartKernel(
  settings: ServerConnection.ISettings,
  id: string,
  requestId?: string
): Promise<IRestartReply> {
  return request<IRestartReply>(settings, `kernels/${encodeURIComponent(id)}/restart`, {
    method: 'POST',
    body: JSON.stringify(requestId ? { request: requestId } : {})
  });
}

/** The HTTP status of a failed request, or null when the server was not reached. */
export function statusOf(error: unknown): number | null {
  return error instanceof ServerConnection.ResponseError ? error.response.status : null;
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
