import { defineConfig } from 'vitest/config';

// One vitest run for the whole workspace; each package is a project with its own config.
// Test files run one at a time: the multi-process tests spawn real daemons, hold real
// sockets and SIGKILL processes, and the machines have 2 cores. The JSON report is what
// .ci/run counts.
export default defineConfig({
  test: {
    projects: ['packages/*', 'apps/*', 'tools/*'],
    fileParallelism: false,
    reporters: ['default', ['json', { outputFile: '.vitest-results/results.json' }]],
  },
});
