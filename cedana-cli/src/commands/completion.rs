//! `cedana completion SHELL`: a completion script from the clap definition, plus, for
//! bash, zsh and fish, dynamic completion of job and checkpoint ids: the script calls
//! `cedana __complete jobs|checkpoints` when the word being completed is such an id.

use clap_complete::Shell;

use crate::cli::{Cli, CompleteKind};

/// Prints the completion script for `shell` to stdout.
pub fn run(shell: Shell) -> anyhow::Result<i32> {
    crate::out!("{}", script(shell)?);
    Ok(0)
}

/// The whole completion script for `shell`.
pub fn script(shell: Shell) -> anyhow::Result<String> {
    let mut cmd = Cli::command_with_set();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cedana", &mut out);
    let generated = String::from_utf8(out)?;
    let sites = id_sites(&cmd);
    let valued = valued_options(&cmd);
    Ok(match shell {
        Shell::Bash => generated + &bash(&sites, &valued),
        Shell::Fish => generated + &fish(&sites, &valued),
        Shell::Zsh => zsh(&generated, &sites, &valued),
        _ => generated,
    })
}

/// Where an id is completed: the subcommand path (words after `cedana`) whose first
/// positional argument is a job id or a checkpoint id.
pub fn id_sites(cmd: &clap::Command) -> Vec<(String, CompleteKind)> {
    let mut out = Vec::new();
    walk(cmd, &mut Vec::new(), &mut out);
    out
}

fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<(String, CompleteKind)>) {
    let first = cmd.get_arguments().find(|a| a.is_positional());
    let in_checkpoints = path.iter().any(|p| p.starts_with("checkpoint"));
    let kind = match first.map(|a| a.get_id().as_str()) {
        Some("jid") => Some(CompleteKind::Jobs),
        Some("id") if in_checkpoints => Some(CompleteKind::Checkpoints),
        _ => None,
    };
    if let Some(kind) = kind {
        out.push((path.join(" "), kind));
    }
    for sub in cmd.get_subcommands() {
        for name in std::iter::once(sub.get_name()).chain(sub.get_visible_aliases()) {
            path.push(name.to_string());
            walk(sub, path, out);
            path.pop();
        }
    }
}

/// Every `--long` and `-s` that takes a value, so the scripts can skip it and its value
/// when they work out the subcommand path.
pub fn valued_options(cmd: &clap::Command) -> Vec<String> {
    let mut out = Vec::new();
    collect_valued(cmd, &mut out);
    out.sort();
    out.dedup();
    out
}

fn collect_valued(cmd: &clap::Command, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        if arg.is_positional() || !arg.get_action().takes_values() {
            continue;
        }
        out.extend(arg.get_long().map(|l| format!("--{l}")));
        out.extend(arg.get_short().map(|s| format!("-{s}")));
    }
    for sub in cmd.get_subcommands() {
        collect_valued(sub, out);
    }
}

fn kind_word(kind: CompleteKind) -> &'static str {
    match kind {
        CompleteKind::Jobs => "jobs",
        CompleteKind::Checkpoints => "checkpoints",
    }
}

fn bash(sites: &[(String, CompleteKind)], valued: &[String]) -> String {
    let cases: String = sites
        .iter()
        .map(|(path, kind)| format!("        \"{path}\") kind={} ;;\n", kind_word(*kind)))
        .collect();
    format!(
        r#"
# Job and checkpoint ids come from the running daemon (`cedana __complete KIND`).
_cedana_ids() {{
    local i word path="" kind="" cur="${{COMP_WORDS[COMP_CWORD]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in
            {valued}) ((i++)); continue ;;
            -*) continue ;;
        esac
        path="${{path:+$path }}$word"
    done
    case "$path" in
{cases}    esac
    if [[ -n "$kind" && "$cur" != -* ]]; then
        COMPREPLY=( $(compgen -W "$("${{COMP_WORDS[0]}}" __complete "$kind" 2>/dev/null)" -- "$cur") )
        return 0
    fi
    _cedana "$@"
}}
complete -F _cedana_ids -o bashdefault -o default cedana
"#,
        valued = valued.join("|"),
    )
}

fn fish(sites: &[(String, CompleteKind)], valued: &[String]) -> String {
    let lines: String = sites
        .iter()
        .map(|(path, kind)| {
            format!(
                "complete -c cedana -n 'test \"$(__cedana_path)\" = \"{path}\"' -f -a '(cedana __complete {} 2>/dev/null)'\n",
                kind_word(*kind)
            )
        })
        .collect();
    format!(
        r#"
# Job and checkpoint ids come from the running daemon (`cedana __complete KIND`).
function __cedana_path
    set -l words (commandline -opc)
    set -e words[1]
    set -l path
    set -l skip 0
    for w in $words
        if test $skip = 1
            set skip 0
            continue
        end
        switch $w
            case {valued}
                set skip 1
                continue
            case '-*'
                continue
        end
        set -a path $w
    end
    string join ' ' $path
end
{lines}"#,
        valued = valued.join(" "),
    )
}

fn zsh(generated: &str, sites: &[(String, CompleteKind)], valued: &[String]) -> String {
    let cases: String = sites
        .iter()
        .map(|(path, kind)| format!("        \"{path}\") kind={} ;;\n", kind_word(*kind)))
        .collect();
    let wrapper = format!(
        r#"
# Job and checkpoint ids come from the running daemon (`cedana __complete KIND`).
_cedana_ids() {{
    # Not `path`: zsh ties that array to $PATH, and `cedana` would no longer be found.
    local -a sub
    local w kind="" skip=0
    for w in "${{(@)words[2,CURRENT-1]}}"; do
        if (( skip )); then skip=0; continue; fi
        case "$w" in
            {valued}) skip=1; continue ;;
            -*) continue ;;
        esac
        sub+=("$w")
    done
    case "${{(j: :)sub}}" in
{cases}    esac
    if [[ -n "$kind" && "$PREFIX" != -* ]]; then
        compadd -- ${{(f)"$(${{words[1]}} __complete $kind 2>/dev/null)"}}
        return
    fi
    _cedana "$@"
}}

"#,
        valued = valued.join("|"),
    );
    // Route both ways clap's script registers itself (autoloaded or sourced) through
    // the wrapper.
    let marker = "if [ \"$funcstack[1]\" = \"_cedana\" ]; then";
    generated
        .replacen(marker, &format!("{wrapper}{marker}"), 1)
        .replacen(
            "    _cedana \"$@\"\nelse",
            "    _cedana_ids \"$@\"\nelse",
            1,
        )
        .replacen("compdef _cedana cedana", "compdef _cedana_ids cedana", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_completed_where_commands_take_them() {
        let sites = id_sites(&Cli::command_with_set());
        let find = |p: &str| sites.iter().find(|(path, _)| path == p).map(|s| s.1);
        for p in [
            "job kill",
            "job delete",
            "job inspect",
            "dump job",
            "restore job",
        ] {
            assert_eq!(find(p), Some(CompleteKind::Jobs), "{p}");
        }
        for p in [
            "checkpoint inspect",
            "checkpoint delete",
            "job checkpoint delete",
        ] {
            assert_eq!(find(p), Some(CompleteKind::Checkpoints), "{p}");
        }
        // `run process --jid` names a new job: nothing to complete.
        assert_eq!(find("run process"), None);
    }

    #[test]
    fn scripts_call_the_hidden_subcommand() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell).expect("script");
            assert!(s.contains("__complete"), "{shell}");
        }
        let zsh = script(Shell::Zsh).expect("zsh");
        assert!(zsh.contains("compdef _cedana_ids cedana"), "{zsh}");
        assert!(zsh.contains("    _cedana_ids \"$@\"\nelse"), "{zsh}");
        let valued = valued_options(&Cli::command_with_set());
        assert!(valued.contains(&"--set".to_string()));
        assert!(!valued.contains(&"--json".to_string()));
    }
}
