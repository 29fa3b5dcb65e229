/**
 * The spawn contract (PROTOCOL.md section 2): how a supervisor hands listeners, its timing
 * and a successor's channel to a daemon it starts. The names are defined here once; the
 * supervisor writes them and the daemon library reads them.
 */

/** Environment variables of the spawn contract. */
export const SpawnEnv = {
  /** Number of listening sockets, at fds `3 .. 3+n-1` (systemd). */
  ListenFds: 'LISTEN_FDS',
  /** Their names in fd order, `a:b:…` (systemd). */
  ListenFdNames: 'LISTEN_FDNAMES',
  /** The pid the listeners are for; a process with another pid ignores them (systemd). */
  ListenPid: 'LISTEN_PID',
  /** `k`: `k` more copies of the listeners follow them, in the same order. */
  ReserveCopies: 'HANDOFF_RESERVE_COPIES',
  /** `successor` for a successor; unset for a cold start. */
  Role: 'HANDOFF_ROLE',
  /** A successor's end of the socket pair to the supervisor. */
  SockFd: 'HANDOFF_SOCK_FD',
  /** The data directory the daemon must lock and open (the supervisor's `[daemon] data_dir`). */
  DataDir: 'HANDOFF_DATA_DIR',
  /** Where the incumbent serves supervisor sessions. */
  ControlSocket: 'HANDOFF_CONTROL_SOCKET',
  /** The supervisor's heartbeat interval, in ms. */
  HeartbeatMs: 'HANDOFF_HEARTBEAT_MS',
  /** The supervisor's liveness timeout, in ms. */
  LivenessMs: 'HANDOFF_LIVENESS_MS',
  /** The supervisor's hello timeout (spawn → Hello), in ms: what a successor's work before its Hello (a preload) must fit in. */
  HelloMs: 'HANDOFF_HELLO_MS',
  /** The accept backlog of each listener, in fd order, `511:128`. */
  Backlogs: 'HANDOFF_LISTEN_BACKLOGS',
  /** A file where a daemon that exits before it serves may write its last lines of output (at most {@link FAILURE_FILE_MAX} bytes). */
  FailureFile: 'HANDOFF_FAILURE_FILE',
  /**
   * How descriptors of moved connections reach this daemon (PROTOCOL.md section 2, "Descriptor
   * channel"): `node-ipc` over the Node IPC channel (`NODE_CHANNEL_FD`); absent, SCM_RIGHTS on
   * the control connection.
   */
  FdChannel: 'HANDOFF_FD_CHANNEL',
} as const;

/** The most a supervisor reads of a daemon's {@link SpawnEnv.FailureFile}. */
export const FAILURE_FILE_MAX = 4096;

/** The first inherited listener's fd (systemd's `SD_LISTEN_FDS_START`). */
export const LISTEN_FDS_START = 3;

/** The separator of list-valued variables (`LISTEN_FDNAMES`, `HANDOFF_LISTEN_BACKLOGS`). */
export const LIST_SEPARATOR = ':';
