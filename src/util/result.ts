/**
 * The one result type for an outcome that may fail for a reason worth reporting (not an
 * exception): `{ ok: true, value }` or `{ ok: false, reason }`, where `reason` is a typed value
 * (a string by default, or an error object such as a `TypedError`).
 */
export type Ok<T> = { readonly ok: true; readonly value: T };
export type Err<E = string> = { readonly ok: false; readonly reason: E };
export type Result<T, E = string> = Ok<T> | Err<E>;

export function ok<T>(value: T): Ok<T>;
export function ok(): Ok<undefined>;
export function ok<T>(value?: T): Ok<T | undefined> {
  return { ok: true, value };
}

export function err<E = string>(reason: E): Err<E> {
  return { ok: false, reason };
}

/** The value, or throws: the reason itself when it is an Error, else `toError(reason)`. */
export function unwrap<T, E>(r: Result<T, E>, toError: (reason: E) => Error = (reason) => new Error(String(reason))): T {
  if (r.ok) return r.value;
  throw r.reason instanceof Error ? r.reason : toError(r.reason);
}

/** Runs `fn`; an exception becomes `{ ok: false, reason: message }`. */
export async function attempt<T>(fn: () => Promise<T>): Promise<Result<T>> {
  try {
    return ok(await fn());
  } catch (e) {
    return err(e instanceof Error ? e.message : String(e));
  }
}
