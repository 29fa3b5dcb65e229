import { defineConfig } from 'vitest/config';

// One vitest run for the whole workspace; each package is a project with its own config.
// The JSON report is what .ci/run counts.
export default defineConfig({
  test: {
    projects: ['packages/*'],
    reporters: ['default', ['json', { outputFile: '.vitest-results/results.json' }]],
  },
});
