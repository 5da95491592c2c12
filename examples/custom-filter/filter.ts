// A filter of this job's own: every float value a site sends is clamped to [-limit, limit], piece
// by piece as the result streams out (no tensor is ever held whole). job.yaml names it with
// `type: custom` and a direction; Flotilla checks `args` against `schema` and calls `create`.
import { type TensorPiece, type TensorStream, viewAs } from 'flotilla/core';
import { defineFilter } from 'flotilla/filters';
import { z } from 'zod';

function clamp(stream: TensorStream, limit: number): TensorStream {
  return {
    header: stream.header,
    async *pieces(): AsyncGenerator<TensorPiece> {
      for await (const p of stream.pieces()) {
        if (p.dtype !== 'F32') {
          yield p;
          continue;
        }
        // a piece's bytes belong to its producer: write the clamped values into new memory
        const out = Float32Array.from(viewAs('F32', p.bytes), (x) => Math.max(-limit, Math.min(limit, x)));
        yield { ...p, bytes: new Uint8Array(out.buffer) };
      }
    },
  };
}

export default defineFilter({
  name: 'clamp',
  schema: z.strictObject({ limit: z.number().positive() }),
  create(args) {
    return {
      // where a result leaves the site; a `receive` half would run where it arrives (the server)
      send: (payload) => ({ ...payload, params: clamp(payload.params, args.limit) }),
    };
  },
});
