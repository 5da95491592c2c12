/** Classification metrics on predicted and true class ids. */

export function confusionMatrix(yTrue: ArrayLike<number>, yPred: ArrayLike<number>, k: number): number[][] {
  if (yTrue.length !== yPred.length) throw new Error(`${yTrue.length} labels but ${yPred.length} predictions`);
  const m = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (let i = 0; i < yTrue.length; i++) m[yTrue[i]!]![yPred[i]!]!++;
  return m;
}

export function accuracy(yTrue: ArrayLike<number>, yPred: ArrayLike<number>): number {
  if (yTrue.length !== yPred.length) throw new Error(`${yTrue.length} labels but ${yPred.length} predictions`);
  if (yTrue.length === 0) return NaN;
  let ok = 0;
  for (let i = 0; i < yTrue.length; i++) if (yTrue[i] === yPred[i]) ok++;
  return ok / yTrue.length;
}

/**
 * Per-class F1 and their unweighted mean over the classes that occur in
 * either the labels or the predictions (scikit-learn's convention); a class
 * with no true and no predicted samples is left out, an ill-defined F1 is 0.
 */
export function f1Scores(cm: readonly (readonly number[])[]): { perClass: number[]; macro: number } {
  const k = cm.length;
  const perClass: number[] = [];
  let sum = 0;
  let used = 0;
  for (let c = 0; c < k; c++) {
    const tp = cm[c]![c]!;
    let support = 0;
    let predicted = 0;
    for (let j = 0; j < k; j++) {
      support += cm[c]![j]!;
      predicted += cm[j]![c]!;
    }
    const f1 = support + predicted > 0 ? (2 * tp) / (support + predicted) : NaN;
    perClass.push(f1);
    if (!Number.isNaN(f1)) {
      sum += f1;
      used++;
    }
  }
  return { perClass, macro: used > 0 ? sum / used : NaN };
}

export interface Scores {
  accuracy: number;
  macroF1: number;
  confusion: number[][];
}

export function score(yTrue: ArrayLike<number>, yPred: ArrayLike<number>, k: number): Scores {
  const confusion = confusionMatrix(yTrue, yPred, k);
  return { accuracy: accuracy(yTrue, yPred), macroF1: f1Scores(confusion).macro, confusion };
}

/** Accuracy of always predicting the most frequent training class. */
export function majorityRate(trainLabels: ArrayLike<number>, testLabels: ArrayLike<number>, k: number): number {
  const counts = new Array<number>(k).fill(0);
  for (let i = 0; i < trainLabels.length; i++) counts[trainLabels[i]!]!++;
  const top = counts.indexOf(Math.max(...counts));
  let hit = 0;
  for (let i = 0; i < testLabels.length; i++) if (testLabels[i] === top) hit++;
  return hit / Math.max(1, testLabels.length);
}
