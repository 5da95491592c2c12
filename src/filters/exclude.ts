/** Leaves tensors out of a stream by name (they never leave this side). */
import type { TensorInfo } from '../core/safetensors-header.ts';
import type { TensorStream } from '../core/tensor-stream.ts';

export function excludeTensors(input: TensorStream, excluded: (name: string) => boolean): TensorStream {
  const newIndex: number[] = [];
  const tensors: TensorInfo[] = [];
  for (const t of input.header.tensors) {
    newIndex.push(excluded(t.name) ? -1 : tensors.length);
    if (!excluded(t.name)) tensors.push(t);
  }
  if (tensors.length === input.header.tensors.length) return input;
  return {
    header: { tensors, metadata: input.header.metadata },
    async *pieces() {
      for await (const p of input.pieces()) {
        const i = newIndex[p.index]!;
        if (i >= 0) yield i === p.index ? p : { ...p, index: i };
      }
    },
  };
}
