// Module resolve hook for job code shipped to a server or site (see job-imports.ts).
// A relative import from inside <jobsDir>/<job>/app/ that leaves the job folder
// and names Flotilla's own sources (".../src/...") resolves to this
// installation's src/, as a Python job would import the installed nvflare.
let jobsDirs = [];
let srcRoot = '';

export async function initialize(data) {
  jobsDirs = data.jobsDirs;
  srcRoot = data.srcRoot;
}

export async function resolve(specifier, context, nextResolve) {
  const parent = context.parentURL;
  if (parent && (specifier.startsWith('./') || specifier.startsWith('../'))) {
    const base = jobsDirs.find((d) => parent.startsWith(d));
    if (base) {
      const rest = parent.slice(base.length).split('/');
      const appRoot = `${base}${rest[0]}/${rest[1]}/`;
      const target = new URL(specifier, parent).href;
      if (!target.startsWith(appRoot)) {
        const m = /^(?:\.\.?\/)+src\/(.+)$/.exec(specifier);
        if (!m) throw new Error(`job module ${parent.slice(appRoot.length)} imports ${specifier}, which is outside the job folder; a job may only import its own files and Flotilla's src/`);
        return nextResolve(new URL(m[1], srcRoot).href, context);
      }
    }
  }
  return nextResolve(specifier, context);
}
