import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'ws-chat',
    include: ['src/**/*.test.ts'],
    testTimeout: 60_000,
  },
});
