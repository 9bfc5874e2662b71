//! The README's synopsis of the command-line tool stays true: every
//! command `shoal --help` lists is there, with every flag its own `--help`
//! lists, and no flag the command does not have.

mod common;

use common::ok;

/// The ```text block under "## The command-line tool".
fn synopsis() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## The command-line tool").nth(1).expect("the README has the section");
    let block = section.split("```text\n").nth(1).expect("a text block").split("```").next().unwrap();
    block.to_string()
}

/// The synopsis lines of `command`: its own line and the continuation lines after it.
fn synopsis_of(synopsis: &str, command: &str) -> String {
    let head = format!("shoal {command} ");
    let mut lines = synopsis.lines().skip_while(|l| !l.starts_with(&head));
    let first = lines.next().unwrap_or_else(|| panic!("no `{head}` line in the README synopsis:\n{synopsis}"));
    let rest: Vec<&str> = lines.take_while(|l| !l.starts_with("shoal ")).collect();
    format!("{first}\n{}", rest.join("\n"))
}

/// Names in a `--help` section ("Commands:", "Options:"): the first word of each entry line.
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    let Some(body) = help.split(&format!("\n{title}\n")).nth(1) else { return Vec::new() };
    body.lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// `-r` or `--batch-bytes`: a flag's name, not a dash in prose or a list.
fn is_flag(word: &str) -> bool {
    let b = word.as_bytes();
    (b.len() == 2 && b[0] == b'-' && b[1].is_ascii_alphabetic())
        || (b.len() > 2 && word.starts_with("--") && b[2..].iter().all(|c| c.is_ascii_lowercase() || *c == b'-'))
}

/// Every command, a group's (`cluster`) as `cluster status`.
fn commands() -> Vec<String> {
    let help = ok(&["--help"]);
    let mut names = Vec::new();
    for name in section(&help, "Commands:").into_iter().filter(|c| *c != "help") {
        let own = ok(&[name, "--help"]);
        let sub: Vec<&str> = section(&own, "Commands:").into_iter().filter(|c| *c != "help").collect();
        if sub.is_empty() {
            names.push(name.to_string());
        } else {
            names.extend(sub.iter().map(|s| format!("{name} {s}")));
        }
    }
    assert!(names.len() >= 15, "{help}");
    names
}

#[test]
fn every_command_is_in_the_readme_synopsis() {
    let synopsis = synopsis();
    for command in commands() {
        synopsis_of(&synopsis, &command);
    }
}

#[test]
fn every_flag_in_the_synopsis_is_true() {
    let synopsis = synopsis();
    for command in commands() {
        let mut words: Vec<&str> = command.split(' ').collect();
        words.push("--help");
        let help = ok(&words);
        let lines = synopsis_of(&synopsis, &command);
        // Each option of the command, by its long or short name.
        let options = help.split("\nOptions:\n").nth(1).unwrap_or_default();
        let mut known = Vec::new();
        for line in options.lines().filter(|l| l.trim_start().starts_with('-')) {
            let names: Vec<&str> =
                line.split_whitespace().map(|w| w.trim_end_matches(',')).take_while(|w| is_flag(w)).collect();
            if names.is_empty() || names.contains(&"--help") {
                continue;
            }
            assert!(
                names.iter().any(|n| lines.split(|c: char| " []|.=".contains(c)).any(|w| w == *n)),
                "`shoal {command}` has {names:?}, which the README synopsis does not show:\n{lines}"
            );
            known.extend(names);
        }
        // And the synopsis shows no option the command lacks.
        for word in lines.split(|c: char| " []|.=".contains(c)).filter(|w| is_flag(w)) {
            assert!(known.contains(&word), "the README shows `{word}` for `shoal {command}`, which has no such option");
        }
    }
}
