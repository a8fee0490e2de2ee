/**
 * Flags built from settings (common/settings.ts): the flag table gives a flag's name, help
 * and placeholder; its type, default, bounds and choices come from the setting the
 * component uses, so `--help`, the parser and the component agree by construction.
 */
import type { FlagSpec, FlagType } from "./args.js";
import { formatDuration } from "../common/duration.js";
import type { NumericKind, Setting } from "../common/settings.js";
import { formatSize } from "../common/size.js";

/** What a flag adds to its setting. */
export interface SettingFlag {
  name: string;
  help: string;
  placeholder?: string | undefined;
  /** How the default is spelled in --help when not the kind's own way (formatDuration, formatSize, String). */
  formatDefault?: ((value: number) => string) | undefined;
  check?: FlagSpec["check"];
  deprecatedNames?: readonly string[] | undefined;
}

const FLAG_TYPE: Readonly<Record<NumericKind, FlagType>> = {
  integer: "number",
  number: "number",
  duration: "duration",
  size: "size",
};

/** The default as a flag's text: what --help shows and what the parser reads when the flag is not given. */
export function settingDefaultText(setting: Setting): string | undefined {
  if (setting.default === undefined) return undefined;
  if (setting.kind === "text") return setting.default;
  if (setting.kind === "duration") return formatDuration(setting.default);
  if (setting.kind === "size") return formatSize(setting.default);
  return String(setting.default);
}

/** The setting each flag was built from. */
const SETTING_OF = new WeakMap<FlagSpec, Setting>();

/** The setting `flag` was built from by settingFlag(), or undefined for a flag of its own. */
export function settingOf(flag: FlagSpec): Setting | undefined {
  return SETTING_OF.get(flag);
}

export function settingFlag(setting: Setting, flag: SettingFlag): FlagSpec {
  const { formatDefault, ...rest } = flag;
  const spec: FlagSpec =
    setting.kind === "text"
      ? { ...rest, type: "string", default: setting.default, choices: setting.choices }
      : {
          ...rest,
          type: FLAG_TYPE[setting.kind],
          default:
            formatDefault && setting.default !== undefined
              ? formatDefault(setting.default)
              : settingDefaultText(setting),
          min: setting.min,
          minExclusive: setting.minExclusive,
          max: setting.max,
        };
  SETTING_OF.set(spec, setting);
  return spec;
}
