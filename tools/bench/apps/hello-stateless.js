// The same app made handoff-ready with @handoff/core with no data directory at all: no
// open, no seal, no revisions. Run by handoff-supervisor under a configuration without
// [daemon] data_dir, which hands it off by overlap: the new process accepts on the shared
// listeners before the old one drains. Needs the stateless daemons of @handoff/core; until
// they land, runDaemon answers that it has no data directory.
import { runDaemon } from '@handoff/core';

const exit = await runDaemon(
  /** @type {import('@handoff/core').DaemonOptions<unknown>} */ (
    /** @type {unknown} */ ({
      buildId: 'hello-stateless',
      listeners: { http: { port: Number(process.env.PORT ?? 8080), host: '127.0.0.1' } },
      handler: () => (req, res) => {
        res.setHeader('content-type', 'text/plain');
        res.end('hello\n');
      },
    })
  ),
);
if (exit.code !== 0) console.error(`hello-stateless: ${exit.reason}`);
process.exit(exit.code);
