/** Errors of the server-side runtime (a module of its own so relay.ts and controller.ts share it without an import cycle). */
export class ControllerError extends Error {
  override readonly name = 'ControllerError';
}
