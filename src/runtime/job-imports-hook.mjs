// Module resolve hook for job code (registered by job-imports.ts, in every thread that loads jobs;
// each registration loads its own instance of this module, told apart by the URL's query).
// `flotilla` and `flotilla/...` resolve to the installation that runs the job, as a Python job
// imports the installed nvflare: one copy of each module, wherever the job folder lives.
// A package not installed where the importing file is (a job folder outside any project, a
// bundle in a site's jobs folder) is looked up beside the installation: the site's environment.
// Registered with a jobs folder (a server's or site's), it also keeps the code shipped there
// inside its own job folder.

/** @type {{ installation: string, source: boolean, jobsDir?: string }} */
let opts = { installation: '', source: false };

export async function initialize(data) {
  opts = data;
}

const isFlotilla = (s) => s === 'flotilla' || s.startsWith('flotilla/');
const isBare = (s) => !/^(?:\.{0,2}\/|[a-z][a-z0-9+.-]*:|#)/i.test(s);

export async function resolve(specifier, context, nextResolve) {
  if (opts.jobsDir === undefined) {
    if (isFlotilla(specifier)) {
      const conditions = opts.source ? [...context.conditions, 'flotilla-source'] : context.conditions;
      return nextResolve(specifier, { ...context, conditions, parentURL: opts.installation });
    }
    if (!isBare(specifier)) return nextResolve(specifier, context);
    try {
      return await nextResolve(specifier, context);
    } catch (e) {
      if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !context.parentURL || context.parentURL === opts.installation) throw e;
      // not installed where the importing file is: the packages installed beside Flotilla
      // (the site's environment, as a Python site's installed packages)
      return nextResolve(specifier, { ...context, parentURL: opts.installation });
    }
  }
  const parent = context.parentURL;
  if (!parent?.startsWith(opts.jobsDir)) return nextResolve(specifier, context);
  // <jobsDir>/<job>/app/...: the job's own files
  const [job, app] = parent.slice(opts.jobsDir.length).split('/');
  const appRoot = `${opts.jobsDir}${job}/${app}/`;
  if (specifier.startsWith('./') || specifier.startsWith('../')) {
    if (!new URL(specifier, parent).href.startsWith(appRoot)) {
      throw new Error(
        `job module ${parent.slice(appRoot.length)} imports ${specifier}, which is outside the job folder; a job may import its own files, 'flotilla/...' and installed packages`,
      );
    }
    return nextResolve(specifier, context);
  }
  return nextResolve(specifier, context); // flotilla/... and packages: the hook registered first
}
