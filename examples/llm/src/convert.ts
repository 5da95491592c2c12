/**
 * Conversion between the platform's TensorDict tensors and tfjs tensors.
 * tfjs has only float32, so F16/BF16/F64 are widened on the way in and,
 * when asked, narrowed on the way out: the I/O boundary is the only place
 * 16-bit floats exist.
 */
import { type DType, allocate, floatReader, floatWriter } from 'flotilla/core';
import { type Tensor, numel, tensor } from 'flotilla/core';
import { tf } from './backend.ts';

export type FloatDType = 'F32' | 'F16' | 'BF16';

/** Float32 copy of a float tensor's values; throws (naming it) for integer tensors. */
export function toFloat32(name: string, t: Tensor): Float32Array {
  if (t.dtype === 'F32') return t.data as Float32Array;
  if (t.dtype !== 'F16' && t.dtype !== 'BF16' && t.dtype !== 'F64') {
    throw new Error(`tensor "${name}": dtype ${t.dtype} is not a float type`);
  }
  const read = floatReader(t.dtype, t.data);
  const out = new Float32Array(numel(t.shape));
  for (let i = 0; i < out.length; i++) out[i] = read(i);
  return out;
}

/** Platform tensor → tfjs tensor; `transpose2d` flips a 2-D [out, in] weight to [in, out]. */
export function toTf(name: string, t: Tensor, transpose2d = false): tf.Tensor {
  const x = tf.tensor(toFloat32(name, t), [...t.shape], 'float32');
  if (!transpose2d) return x;
  if (t.shape.length !== 2) throw new Error(`tensor "${name}": expected 2-D, got shape [${t.shape.join(', ')}]`);
  const y = tf.transpose(x);
  x.dispose();
  return y;
}

/** tfjs tensor → platform tensor in `dtype` (a copy; the tfjs tensor is not disposed). */
export function fromTf(x: tf.Tensor, dtype: FloatDType = 'F32', transpose2d = false): Tensor {
  const src = transpose2d ? tf.tidy(() => tf.transpose(x)) : x;
  const values = src.dataSync() as Float32Array;
  const shape = [...src.shape];
  let out: Tensor;
  if (dtype === 'F32') {
    out = tensor('F32', shape, Float32Array.from(values));
  } else {
    const data = allocate(dtype as DType, values.length);
    const write = floatWriter(dtype, data);
    for (let i = 0; i < values.length; i++) write(i, values[i]!);
    out = tensor(dtype, shape, data as Uint16Array);
  }
  if (src !== x) src.dispose();
  return out;
}
