/** The initial global model: a 2-layer MLP (8 → 32 → 3), Glorot-uniform, seeded so every run starts alike. */
import { f32 } from 'flotilla/core';
import type { TensorDict } from 'flotilla/core';
import { CLASSES, FEATURES, rng } from './data.ts';

export const HIDDEN = 32;

function glorot(fanIn: number, fanOut: number, r: () => number): number[] {
  const lim = Math.sqrt(6 / (fanIn + fanOut));
  return Array.from({ length: fanIn * fanOut }, () => (r() * 2 - 1) * lim);
}

export function initialModel(): TensorDict {
  const r = rng(42);
  return new Map([
    ['dense1.kernel', f32([FEATURES, HIDDEN], glorot(FEATURES, HIDDEN, r))],
    ['dense1.bias', f32([HIDDEN], new Array(HIDDEN).fill(0))],
    ['dense2.kernel', f32([HIDDEN, CLASSES], glorot(HIDDEN, CLASSES, r))],
    ['dense2.bias', f32([CLASSES], new Array(CLASSES).fill(0))],
  ]);
}
