"""Torn Optuna journals (issue 13 item 5): a record cut in half by a crash is found before anything is
written; the torn tail is cut off with a warning naming the file and line, every complete record is kept and
the study resumes; any other damaged line stops with a one-line error naming file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

from benchmarks.cli import UsageError
from benchmarks.cli import main as cli_main
from benchmarks.tuning import TornJournalWarning, best_params, open_storage, run_study, scan_journal
from tests.tuning_toys import toy_spec

PROJECT_ROOT = Path(__file__).resolve().parent.parent
State = optuna.trial.TrialState


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real journal written by Optuna through the harness: the toy study with 3 complete trials."""
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "evals.jsonl"))
    path = tmp_path / "journal.log"
    summary = run_study(toy_spec(str(path), tmp_path / "evals.jsonl", 3))
    assert summary.n_complete == 3
    return path


def cut_last_record_in_half(path: Path) -> tuple[list[bytes], bytes]:
    """Cut the journal's last record in the middle (no end of line), as a crash during an append does.

    Returns the complete lines kept and the torn bytes left at the end."""
    lines = path.read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]
    path.write_bytes(b"".join(lines[:-1]) + torn)
    return lines[:-1], torn


def test_torn_tail_is_cut_with_a_warning_and_the_study_resumes(journal: Path, tmp_path: Path) -> None:
    study = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(str(journal)))
    before = {t.number: (t.state, t.params, t.value) for t in study.get_trials()}
    kept, torn = cut_last_record_in_half(journal)
    assert json.loads(kept[-1])  # the record before the torn one is complete
    assert scan_journal(journal).torn_line == len(kept) + 1

    with pytest.warns(TornJournalWarning) as caught:
        summary = run_study(toy_spec(str(journal), tmp_path / "evals.jsonl", 5))
    message = str(caught[0].message)
    assert f"journal storage {journal} line {len(kept) + 1} was a torn record" in message
    assert f"kept the {len(kept)} complete record(s)" in message
    saved = Path(re.search(r"the cut bytes are in (\S+)$", message).group(1))
    assert saved.read_bytes() == torn  # nothing is thrown away

    data = journal.read_bytes()
    assert data.startswith(b"".join(kept))  # every complete record kept, byte for byte
    lines = data.splitlines(keepends=True)
    assert all(line.endswith(b"\n") and "op_code" in json.loads(line) for line in lines)  # no merged line
    # The torn record was the last trial's COMPLETE state: that trial stays RUNNING (its worker, this
    # process, is alive), the two earlier trials keep their values, and 5 trials are now complete.
    study = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(str(journal)))
    after = {t.number: t for t in study.get_trials()}
    assert [(after[n].state, after[n].params, after[n].value) for n in (0, 1)] == [before[0], before[1]]
    assert after[2].state == State.RUNNING and before[2][0] == State.COMPLETE
    assert summary.n_complete == 5 == sum(t.state == State.COMPLETE for t in after.values())
    assert best_params("toy-synthetic-16", str(journal))  # a fresh read of the whole journal works


def test_record_appended_onto_a_torn_line_is_refused_naming_file_and_line(journal: Path, tmp_path: Path) -> None:
    """What the old harness left: a new record written on the torn line; later records follow."""
    kept, torn = cut_last_record_in_half(journal)
    with journal.open("ab") as fh:
        fh.write(kept[1] + kept[2])  # lands on the torn line, then one more line
    damaged = journal.read_bytes()
    line = len(kept) + 1
    expected = rf"^journal storage {re.escape(str(journal))} line {line} is not a journal record \(not JSON: "
    with pytest.raises(UsageError, match=expected) as err:
        run_study(toy_spec(str(journal), tmp_path / "evals.jsonl", 5))
    assert "\n" not in str(err.value) and f"keep its first {line - 1} line(s)" in str(err.value)
    with pytest.raises(UsageError, match=expected):
        best_params("toy-synthetic-16", str(journal))
    assert journal.read_bytes() == damaged  # refused, never changed
    assert not list(tmp_path.glob("journal.log.torn-*"))


def test_torn_only_record_and_non_journal_files(tmp_path: Path) -> None:
    only = tmp_path / "only.log"
    only.write_bytes(b'{"op_code":0,"worker_id":"w-1","study_na')  # the first append was cut
    with pytest.warns(TornJournalWarning, match=rf"{re.escape(str(only))} line 1 was a torn record.*kept the 0"):
        storage = open_storage(str(only))
    assert only.read_bytes() == b"" and optuna.get_all_study_names(storage) == []
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello, no end of line")  # not a journal: refused, never truncated
    with pytest.raises(UsageError, match="is not an Optuna journal file"):
        open_storage(str(text))
    assert text.read_bytes() == b"hello, no end of line"


def test_tune_prints_the_repair_as_one_warning_line(journal: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import benchmarks.tuning as tuning

    kept, _ = cut_last_record_in_half(journal)

    def fake_run_study(spec: tuning.TuneSpec, *, workers: int = 1, echo: object = None) -> tuning.TuneSummary:
        open_storage(spec.storage)  # what the real run does first
        return tuning.TuneSummary(spec.name, str(journal), 0, 0, 0, 0, [], None, {})

    monkeypatch.setattr(tuning, "run_study", fake_run_study)
    assert cli_main(["tune", "--method", "dscph", "--dataset", "synthetic", "--bits", "16", "--trials", "1",
                     "--storage", str(journal), "--device", "cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: journal storage {journal} line {len(kept) + 1} was a torn")


def test_optuna_lower_bound_has_the_journal_lock_grace_period() -> None:
    """Optuna 4.3 added ``grace_period`` to the journal file locks (a lock left by a killed worker is
    released after it); the declared lower bound must include that release."""
    import inspect

    (bound,) = re.findall(r'^\s*"optuna>=([\d.]+)', (PROJECT_ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert tuple(int(p) for p in bound.split(".")) >= (4, 3)
    from optuna.storages.journal import JournalFileOpenLock, JournalFileSymlinkLock

    for lock in (JournalFileOpenLock, JournalFileSymlinkLock):
        assert "grace_period" in inspect.signature(lock).parameters
