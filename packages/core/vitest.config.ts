import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'core',
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    // Tests spawn real processes and bind real sockets: one file at a time.
    fileParallelism: false,
  },
});
