/**
 * @peculiar/x509 uses tsyringe, which refuses to load without the
 * `reflect-metadata` polyfill; that package is not installed. tsyringe only
 * needs get/define metadata for constructor injection, so a small WeakMap
 * store is enough. Must be imported before `@peculiar/x509`.
 */
type Key = unknown;
const store = new WeakMap<object, Map<Key, unknown>>();
const R = Reflect as unknown as Record<string, unknown>;

if (typeof R.getMetadata !== 'function') {
  const own = (target: object, prop?: PropertyKey): Map<Key, unknown> | undefined => store.get(target)?.get(prop ?? '') as Map<Key, unknown> | undefined;
  R.defineMetadata = (key: Key, value: unknown, target: object, prop?: PropertyKey): void => {
    let byProp = store.get(target);
    if (!byProp) store.set(target, (byProp = new Map()));
    let m = byProp.get(prop ?? '') as Map<Key, unknown> | undefined;
    if (!m) byProp.set(prop ?? '', (m = new Map()));
    m.set(key, value);
  };
  R.getOwnMetadata = (key: Key, target: object, prop?: PropertyKey): unknown => own(target, prop)?.get(key);
  R.hasOwnMetadata = (key: Key, target: object, prop?: PropertyKey): boolean => own(target, prop)?.has(key) ?? false;
  R.getMetadata = (key: Key, target: object, prop?: PropertyKey): unknown => {
    for (let t: object | null = target; t; t = Object.getPrototypeOf(t) as object | null) {
      const m = own(t, prop);
      if (m?.has(key)) return m.get(key);
    }
    return undefined;
  };
  R.hasMetadata = (key: Key, target: object, prop?: PropertyKey): boolean => (R.getMetadata as (k: Key, t: object, p?: PropertyKey) => unknown)(key, target, prop) !== undefined;
  R.metadata = (key: Key, value: unknown) => (target: object, prop?: PropertyKey) => (R.defineMetadata as (k: Key, v: unknown, t: object, p?: PropertyKey) => void)(key, value, target, prop);
}
export {};
