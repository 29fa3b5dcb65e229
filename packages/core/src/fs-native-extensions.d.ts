// The subset of fs-native-extensions (open-file-description fcntl locks on Linux) used here.
declare module 'fs-native-extensions' {
  /** Takes an exclusive lock without waiting; false when another open file description holds it. */
  export function tryLock(fd: number): boolean;
  export function unlock(fd: number): void;
}
