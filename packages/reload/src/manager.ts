/**
 * The plugins of one daemon, by name: what the daemon library's Reload request and the
 * operator's `handoffctl reload` reach, and where status pages and metrics read from.
 */
import { PluginError } from './errors.js';
import type { HotPlugin, ReloadOptions } from './plugin.js';
import type { PluginContract, PluginStats, ReloadReport } from './types.js';

/** Escapes a Prometheus label value. */
function labelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** One metric family of the exposition: HELP, TYPE, then its samples. */
interface Family {
  readonly name: string;
  readonly type: 'counter' | 'gauge';
  readonly help: string;
  readonly samples: (stats: PluginStats) => readonly { readonly labels?: Readonly<Record<string, string>>; readonly value: number }[];
}

const FAMILIES: readonly Family[] = [
  { name: 'reloads_total', type: 'counter', help: 'Reloads of the plugin that ran to a report, whatever their outcome.', samples: (s) => [{ value: s.reloads }] },
  { name: 'reload_failures_total', type: 'counter', help: 'Reloads whose candidate was refused before the swap (not found, contract, load, load timeout, self-test).', samples: (s) => [{ value: s.failures }] },
  { name: 'rollbacks_total', type: 'counter', help: 'Reloads rolled back after the swap (failed calls or a crash during probation).', samples: (s) => [{ value: s.rollbacks }] },
  { name: 'calls_total', type: 'counter', help: 'Calls made to the plugin.', samples: (s) => [{ value: s.calls }] },
  { name: 'calls_failed_total', type: 'counter', help: 'Calls that threw, rejected or whose worker crashed.', samples: (s) => [{ value: s.callsFailed }] },
  { name: 'calls_cut_total', type: 'counter', help: 'Calls still running at a drain deadline (or at close), rejected with CUT.', samples: (s) => [{ value: s.callsCut }] },
  { name: 'restarts_total', type: 'counter', help: 'Crashes of the active version\'s worker, each followed by a restart from its file.', samples: (s) => [{ value: s.restarts }] },
  { name: 'in_flight', type: 'gauge', help: 'Calls in flight, per version.', samples: (s) => Object.entries(s.inFlight).map(([version, value]) => ({ labels: { version }, value })) },
  { name: 'workers', type: 'gauge', help: 'Worker threads of the plugin alive (0 in-thread).', samples: (s) => [{ value: s.workers }] },
  { name: 'last_reload_seconds', type: 'gauge', help: 'How long the last reload took, request to settled (absent before the first).', samples: (s) => (s.lastReloadMs === null ? [] : [{ value: s.lastReloadMs / 1_000 }]) },
  { name: 'info', type: 'gauge', help: 'The version taking calls, the plugin\'s state and mode (always 1).', samples: (s) => [{ labels: { version: s.version, state: s.state, mode: s.mode }, value: 1 }] },
];

/** A plugin of any contract. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- HotPlugin<M> is invariant in M: only `any` admits every contract
type AnyPlugin = HotPlugin<any>;

/** The plugins of a daemon, by name. */
export class ReloadManager {
  readonly #plugins = new Map<string, AnyPlugin>();

  constructor(plugins: Iterable<AnyPlugin> = []) {
    for (const plugin of plugins) this.add(plugin);
  }

  /** Adds a loaded plugin; a second plugin of the same name is refused (`BAD_OPTIONS`). */
  add(plugin: AnyPlugin): void {
    if (this.#plugins.has(plugin.name)) throw new PluginError('BAD_OPTIONS', plugin.name, `a plugin named ${plugin.name} was already added`);
    this.#plugins.set(plugin.name, plugin);
  }

  /** The plugin named `name` (`UNKNOWN_PLUGIN`, listing the names, if there is none). */
  get<M extends PluginContract<M>>(name: string): HotPlugin<M> {
    const plugin = this.#plugins.get(name);
    if (plugin === undefined) throw this.#unknown(name);
    return plugin as HotPlugin<M>;
  }

  /** The plugins' names, in the order they were added. */
  names(): readonly string[] {
    return [...this.#plugins.keys()];
  }

  /** Reloads the plugin named `name`: see {@link HotPlugin.reload}. Rejects `UNKNOWN_PLUGIN` for a name it does not have. */
  reload(name: string, options?: ReloadOptions): Promise<ReloadReport> {
    const plugin = this.#plugins.get(name);
    if (plugin === undefined) return Promise.reject(this.#unknown(name));
    return plugin.reload(options);
  }

  /** Every plugin's stats. */
  stats(): readonly PluginStats[] {
    return [...this.#plugins.values()].map((plugin) => plugin.stats);
  }

  /**
   * The plugins' stats in the Prometheus text exposition format, each sample labelled
   * `plugin="name"`: `<prefix>reloads_total`, `reload_failures_total`, `rollbacks_total`,
   * `calls_total`, `calls_failed_total`, `calls_cut_total`, `restarts_total`,
   * `in_flight{version}`, `workers`, `last_reload_seconds` and `info{version,state,mode}`.
   */
  metrics(prefix = 'handoff_plugin_'): string {
    const stats = this.stats();
    const lines: string[] = [];
    for (const family of FAMILIES) {
      const name = `${prefix}${family.name}`;
      lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`);
      for (const s of stats) {
        for (const sample of family.samples(s)) {
          const labels = Object.entries({ plugin: s.name, ...sample.labels })
            .map(([key, value]) => `${key}="${labelValue(value)}"`)
            .join(',');
          lines.push(`${name}{${labels}} ${sample.value}`);
        }
      }
    }
    return `${lines.join('\n')}\n`;
  }

  /** Closes every plugin (see {@link HotPlugin.close}). */
  async close(timeoutMs?: number): Promise<void> {
    await Promise.all([...this.#plugins.values()].map((plugin) => plugin.close(timeoutMs)));
  }

  #unknown(name: string): PluginError {
    const names = this.names();
    return new PluginError('UNKNOWN_PLUGIN', name, `no plugin named ${JSON.stringify(name)}; ${names.length === 0 ? 'there are no plugins' : `the plugins: ${names.join(', ')}`}`);
  }
}
