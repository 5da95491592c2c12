// Module resolve hook for job code (registered by job-imports.ts, in every thread that loads jobs;
// each registration loads its own instance of this module, told apart by the URL's query).
// `flotilla` and `flotilla/...` resolve to the installation that runs the job, as a Python job
// imports the installed nvflare: one copy of each module, wherever the job folder lives.
// Registered with a jobs folder (a server's or site's), it also keeps the code shipped there
// inside its own job folder, and looks up other packages beside the installation when the
// jobs folder has no node_modules of its own.

/** @type {{ installation: string, source: boolean, jobsDir?: string }} */
let opts = { installation: '', source: false };

export async function initialize(data) {
  opts = data;
}

const isFlotilla = (s) => s === 'flotilla' || s.startsWith('flotilla/');
const isBare = (s) => !/^(?:\.{0,2}\/|[a-z][a-z0-9+.-]*:|#)/i.test(s);

export async function resolve(specifier, context, nextResolve) {
  if (opts.jobsDir === undefined) {
    if (!isFlotilla(specifier)) return nextResolve(specifier, context);
    const conditions = opts.source ? [...context.conditions, 'flotilla-source'] : context.conditions;
    return nextResolve(specifier, { ...context, conditions, parentURL: opts.installation });
  }
  const parent = context.parentURL;
  if (!parent?.startsWith(opts.jobsDir)) return nextResolve(specifier, context);
  // <jobsDir>/<job>/app/...: the job's own files
  const [job, app] = parent.slice(opts.jobsDir.length).split('/');
  const appRoot = `${opts.jobsDir}${job}/${app}/`;
  if (specifier.startsWith('./') || specifier.startsWith('../')) {
    if (!new URL(specifier, parent).href.startsWith(appRoot)) {
      throw new Error(`job module ${parent.slice(appRoot.length)} imports ${specifier}, which is outside the job folder; a job may import its own files, 'flotilla/...' and installed packages`);
    }
    return nextResolve(specifier, context);
  }
  if (!isBare(specifier) || isFlotilla(specifier)) return nextResolve(specifier, context);
  try {
    return await nextResolve(specifier, context);
  } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND') throw e;
    // the site's environment: packages installed beside Flotilla
    return nextResolve(specifier, { ...context, parentURL: opts.installation });
  }
}
