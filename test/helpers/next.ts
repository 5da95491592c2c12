/** The next value of an async iterator; fails the test if it has ended (`it.next().value` would be `any`). */
export async function nextValue<T>(it: AsyncIterator<T> | AsyncIterable<T>): Promise<T> {
  const iter = Symbol.asyncIterator in it ? it[Symbol.asyncIterator]() : it;
  const r = await iter.next();
  if (r.done) throw new Error('the iterator ended before a value arrived');
  return r.value;
}
