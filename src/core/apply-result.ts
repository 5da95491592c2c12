import { floatReader, floatWriter, allocate } from './dtypes.ts';
import type { ParamsType } from './fl-model.ts';
import { type TensorDict, numel } from './tensor.ts';

/** The model a result stands for: itself if FULL, base + result if DIFF; tensors it leaves out keep the base's value. */
export function applyResult(base: TensorDict, result: TensorDict, type: ParamsType): TensorDict {
  const out: TensorDict = new Map(base);
  for (const [name, t] of result) {
    const b = base.get(name);
    if (!b) throw new Error(`result has tensor "${name}" that the model does not have`);
    if (numel(b.shape) !== numel(t.shape))
      throw new Error(`tensor "${name}": result shape [${t.shape.join(', ')}] differs from [${b.shape.join(', ')}]`);
    if (type === 'FULL') {
      out.set(name, t);
      continue;
    }
    const n = numel(b.shape);
    const data = allocate(b.dtype, n);
    const rb = floatReader(b.dtype, b.data);
    const rt = floatReader(t.dtype, t.data);
    const w = floatWriter(b.dtype, data);
    for (let i = 0; i < n; i++) w(i, rb(i) + rt(i));
    out.set(name, { dtype: b.dtype, shape: b.shape, data });
  }
  return out;
}
