import { endianness } from 'node:os';
import { type DType, type DTypeArrayMap, allocate, dtypeSize } from './dtypes.ts';

if (endianness() !== 'LE') {
  // safetensors is little-endian and every view in Flotilla is zero-copy.
  throw new Error('Flotilla requires a little-endian machine');
}

/** One named array: storage, shape and element type. */
export interface Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly data: DTypeArrayMap[D];
}

/** name → tensor, in a fixed order (Map keeps insertion order even for numeric names). */
export type TensorDict = Map<string, Tensor>;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function byteLengthOf(dtype: DType, shape: readonly number[]): number {
  return numel(shape) * dtypeSize(dtype);
}

export function tensor<D extends DType>(dtype: D, shape: readonly number[], data?: DTypeArrayMap[D]): Tensor<D> {
  const n = numel(shape);
  const d = data ?? allocate(dtype, n);
  if (d.length !== n) throw new Error(`tensor data has ${d.length} elements, shape [${shape.join(', ')}] needs ${n}`);
  return { dtype, shape: [...shape], data: d };
}

/** Float32 tensor from plain numbers (handy in tests and examples). */
export function f32(shape: readonly number[], values: ArrayLike<number>): Tensor<'F32'> {
  return tensor('F32', shape, Float32Array.from(values));
}

/** The tensor's raw little-endian bytes, without copying. */
export function tensorBytes(t: Tensor): Uint8Array {
  const d = t.data;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

export function dictBytes(dict: TensorDict): number {
  let n = 0;
  for (const t of dict.values()) n += tensorBytes(t).byteLength;
  return n;
}

export function cloneTensor<D extends DType>(t: Tensor<D>): Tensor<D> {
  return { dtype: t.dtype, shape: [...t.shape], data: t.data.slice() as DTypeArrayMap[D] };
}

export function cloneDict(dict: TensorDict): TensorDict {
  return new Map([...dict].map(([k, t]) => [k, cloneTensor(t)]));
}
