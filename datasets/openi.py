"""Open-i / Indiana University chest X-ray loader (``openi``).

The IU X-ray collection (Demner-Fushman et al., *JAMIA* 23(2), 2016, doi 10.1093/jamia/ocv080) is read from
either of its two public layouts, under ``DIR/iu-xray/`` or ``DIR/openi/`` (first found):

* **Original NLM release** (openi.nlm.nih.gov ``NLMCXR_reports.tgz`` + ``NLMCXR_png.tgz``)::

      ecgen-radiology/<n>.xml     one report: <uId id="CXR<n>"/>, <AbstractText Label="FINDINGS|IMPRESSION">,
                                  <MeSH><major>..</major><automatic>..</automatic></MeSH>,
                                  <parentImage id="CXR1_1_IM-0001-4001"> per image
      NLMCXR_png/<parentImage id>.png

  The XML carries no view (frontal / lateral) per image; it is taken from ``indiana_projections.csv`` when
  that file sits beside ``ecgen-radiology/`` (matched on report uid and the ``IM-xxxx-yyyy`` part of the
  name), otherwise ``views=frontal`` is an error (``views=all`` works).
* **CSV layout** (the common Kaggle redistribution)::

      indiana_reports.csv         uid, MeSH, Problems, image, indication, comparison, findings, impression
      indiana_projections.csv     uid, filename, projection (Frontal / Lateral)
      images/images_normalized/<filename>      (also accepted: images_normalized/, images/, or images_dir=...)

Labels are the ``top_n`` (default 20) most frequent normalised MeSH *major* headings: the term before the
first ``/`` (``"Opacity/lung/apex/left"`` → ``"Opacity"``), white space collapsed, merged case-insensitively
(shown in their most frequent spelling); ``normal`` is a label like any other; the placeholder
``No Indexing`` is not a heading and gives no label. Frequencies are counted once per report over all reports.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medhash_datasets.base import DatasetError, PairedDataset, require_dir
from medhash_datasets.leakage import ItemRecords, audit_splits, leakage_options
from medhash_datasets.loading import (
    IMAGE_CHECKS,
    OptionSpec,
    SkipCounter,
    check_image,
    clean_text,
    multi_hot,
    parse_options,
    split_indices,
    top_n_vocabulary,
)
from medhash_datasets.registry import DATASETS

OPENI_SUBDIRS = ("iu-xray", "openi")
OPENI_HOW_TO_GET = (
    "Get the NLM release (NLMCXR_reports.tgz and NLMCXR_png.tgz from openi.nlm.nih.gov, or run "
    "`python -m benchmarks data fetch openi --data-root DIR`) or the CSV layout (indiana_reports.csv, "
    "indiana_projections.csv and images/images_normalized/) and place it under DIR/iu-xray/ or DIR/openi/."
)
#: Heading names that are placeholders, not findings.
NON_HEADINGS = frozenset({"no indexing"})
OPENI_SCHEMES = ("mesh-major",)

OPENI_OPTIONS: dict[str, OptionSpec] = {
    "layout": OptionSpec("choice", "auto", ("auto", "xml", "csv"), help="which release layout to read"),
    "text_field": OptionSpec(
        "choice",
        "impression",
        ("impression", "findings", "both"),
        help="impression (falls back to findings), findings (falls back to impression), or findings + impression",
    ),
    "views": OptionSpec("choice", "frontal", ("frontal", "all"), help="one frontal image per report, or every image"),
    "top_n": OptionSpec("int", 20, low=1, help="number of MeSH major headings kept as labels"),
    "mesh": OptionSpec(
        "choice", "major", ("major", "major+automatic"), help="MeSH terms used for labels (automatic: XML only)"
    ),
    "split": OptionSpec("str", "70,10,20", help="train,validation,query percentages of reports (seeded)"),
    "images_dir": OptionSpec("str", None, help="image folder (absolute, or relative to the dataset folder)"),
    "image_check": OptionSpec("choice", "open", IMAGE_CHECKS, help="how each image file is checked"),
    "require_images": OptionSpec(
        "bool", True, help="false keeps items whose image is absent (text and label statistics only)"
    ),
    **leakage_options("error", "report (uid)"),
}
#: Files of an Open-i folder (either layout), used to tell a data root that points at the dataset folder itself.
OPENI_MARKERS = ("indiana_reports.csv", "ecgen-radiology", "NLMCXR_reports")


@dataclass
class OpeniReport:
    """One parsed report.

    Attributes
    ----------
    uid : str
        Report id without the ``CXR`` prefix (``"1"``).
    findings, impression : str
        Report sections, white space collapsed (``""`` when absent).
    mesh_major, mesh_automatic : list[str]
        Raw MeSH terms in file order (``"Opacity/lung/apex/left"``).
    images : list[tuple[str, str]]
        ``(file name, projection)`` per image; projection ``"Frontal"``, ``"Lateral"`` or ``""`` (unknown).
    source : str
        Where the report was read: the XML file name, or ``indiana_reports.csv row <k>`` (1-based data row).
    """

    uid: str
    findings: str = ""
    impression: str = ""
    mesh_major: list[str] = field(default_factory=list)
    mesh_automatic: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""


def normalise_heading(term: str) -> str:
    """MeSH term → heading: the part before the first ``/``, white space collapsed (``"Opacity/lung"`` → ``"Opacity"``)."""
    return " ".join(term.split("/", 1)[0].split())


def _im_key(uid: str, name: str) -> tuple[str, str] | None:
    """``(uid, "IM-0001-4001")`` from an image name such as ``CXR1_1_IM-0001-4001`` or ``1_IM-0001-4001.dcm.png``."""
    pos = name.find("IM-")
    if pos < 0:
        return None
    rest = name[pos:]
    for suffix in (".dcm.png", ".png", ".dcm"):
        if rest.endswith(suffix):
            rest = rest[: -len(suffix)]
            break
    return uid, rest


def _item_id(name: str) -> str:
    """Image file name → item id: ``.png`` and then ``.dcm`` removed (``1_IM-0001-4001.dcm.png`` → ``1_IM-0001-4001``)."""
    for suffix in (".png", ".dcm"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def parse_openi_xml(path: Path) -> OpeniReport:
    """Parse one report of the original Open-i XML release (``ecgen-radiology/<n>.xml``).

    Parameters
    ----------
    path : Path
        The XML file. The report uid is ``<uId id="CXR<n>">`` without ``CXR``, else the file stem.

    Returns
    -------
    OpeniReport
        Sections from ``<AbstractText Label="FINDINGS"|"IMPRESSION">``, MeSH from ``<MeSH><major>`` and
        ``<automatic>``, images from ``<parentImage id=...>`` (file ``<id>.png``, projection unknown).

    Raises
    ------
    DatasetError
        If the file is not well-formed XML (naming the file and line).
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DatasetError(f"openi: {path}: not well-formed XML ({err})") from None
    uid_el = root.find(".//uId")
    uid = (uid_el.get("id") if uid_el is not None else None) or path.stem
    uid = uid[3:] if uid.upper().startswith("CXR") else uid
    report = OpeniReport(uid=uid.strip(), source=path.name)
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().upper()
        text = clean_text("".join(node.itertext()))
        if label == "FINDINGS":
            report.findings = text
        elif label == "IMPRESSION":
            report.impression = text
    for mesh in root.iter("MeSH"):
        report.mesh_major += [clean_text(e.text) for e in mesh.findall("major") if clean_text(e.text)]
        report.mesh_automatic += [clean_text(e.text) for e in mesh.findall("automatic") if clean_text(e.text)]
    for img in root.iter("parentImage"):
        image_id = (img.get("id") or "").strip()
        if image_id:
            report.images.append((f"{image_id}.png", ""))
    return report


def _read_projections(path: Path) -> dict[tuple[str, str], str]:
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"openi: cannot read {path}: {err}") from None
    missing = {"uid", "filename", "projection"} - set(df.columns)
    if missing:
        raise DatasetError(f"openi: {path} lacks column(s) {sorted(missing)}")
    out = {}
    for uid, name, proj in zip(df["uid"], df["filename"], df["projection"]):
        key = _im_key(uid.strip(), name.strip())
        if key is not None:
            out[key] = proj.strip()
    return out


def _reports_from_xml(base: Path) -> tuple[list[OpeniReport], bool, list[Path]]:
    xml_dir = next(p for p in (base / "ecgen-radiology", base / "NLMCXR_reports" / "ecgen-radiology") if p.is_dir())
    files = sorted(xml_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DatasetError(f"openi: no *.xml report in {xml_dir}. {OPENI_HOW_TO_GET}")
    reports = [parse_openi_xml(p) for p in files]
    proj_path = base / "indiana_projections.csv"
    has_views = proj_path.is_file()
    if has_views:
        views = _read_projections(proj_path)
        for rep in reports:
            rep.images = [(name, views.get(_im_key(rep.uid, name) or ("", ""), "")) for name, _ in rep.images]
    return reports, has_views, files + ([proj_path] if has_views else [])


def _reports_from_csv(base: Path) -> list[OpeniReport]:
    import pandas as pd

    paths = {n: base / f"indiana_{n}.csv" for n in ("reports", "projections")}
    for p in paths.values():
        if not p.is_file():
            raise DatasetError(f"openi: {p} not found. {OPENI_HOW_TO_GET}")
    try:
        rep = pd.read_csv(paths["reports"], dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"openi: cannot read {paths['reports']}: {err}") from None
    missing = {"uid", "MeSH", "findings", "impression"} - set(rep.columns)
    if missing:
        raise DatasetError(f"openi: {paths['reports']} lacks column(s) {sorted(missing)}")
    proj = pd.read_csv(paths["projections"], dtype=str, keep_default_na=False)
    if {"uid", "filename", "projection"} - set(proj.columns):
        raise DatasetError(f"openi: {paths['projections']} lacks columns uid, filename, projection")
    images: dict[str, list[tuple[str, str]]] = {}
    for uid, name, view in zip(proj["uid"], proj["filename"], proj["projection"]):
        images.setdefault(uid.strip(), []).append((name.strip(), view.strip()))
    out = []
    for k, row in enumerate(rep.itertuples(index=False), 1):
        uid = str(row.uid).strip()
        out.append(
            OpeniReport(
                uid=uid,
                source=f"{paths['reports'].name} row {k}",
                findings=clean_text(row.findings),
                impression=clean_text(row.impression),
                mesh_major=[clean_text(t) for t in str(row.MeSH).split(";") if clean_text(t)],
                images=images.get(uid, []),
            )
        )
    return out


def _parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in text.replace("/", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0 or parts[2] <= 0:
        raise DatasetError(
            f"openi: option split={text!r} must be three percentages train,validation,query (e.g. 70,10,20)"
        )
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def _report_text(rep: OpeniReport, mode: str) -> str:
    if mode == "impression":
        return rep.impression or rep.findings
    if mode == "findings":
        return rep.findings or rep.impression
    return " ".join(t for t in (rep.findings, rep.impression) if t)


@DATASETS.register("openi")
def load_openi(
    data_root: Path | None, *, label_scheme: str | None = None, seed: int = 0, **options: object
) -> PairedDataset:
    """Load Open-i (IU X-ray) report–image pairs with MeSH-heading labels and a seeded by-report split.

    Parameters
    ----------
    data_root : Path | None
        Folder holding ``iu-xray/`` or ``openi/`` in either layout (module docstring).
    label_scheme : str | None
        ``mesh-major`` (the only scheme; recorded as ``mesh-major-top<N>``).
    seed : int
        Seeds the split: reports (uids) are permuted with ``numpy.random.default_rng(seed)`` and cut into
        train / validation / query by ``split``; a report's images never straddle splits.
    **options
        ``layout`` (``auto`` | ``xml`` | ``csv``); ``text_field`` (``impression`` default, falling back to
        findings; ``findings``, falling back to impression; ``both``); ``views`` (``frontal`` default: the first
        frontal image of each report in file order, further frontal images skipped as ``extra frontal view``;
        ``all``: every image is a pair); ``top_n`` (20); ``mesh`` (``major`` or ``major+automatic``, XML only);
        ``split`` (``"70,10,20"`` percentages); ``images_dir``; ``image_check``; ``require_images`` (false keeps
        items whose image is absent, for statistics); ``case_overlap`` (``error`` default | ``merge`` | ``flag``;
        a report in two splits cannot arise from the by-report split, so this checks the loader itself);
        ``duplicate_images`` (``flag`` default | ``drop`` | ``error`` | ``off``; byte-identical image files of
        different reports in two splits, see :mod:`medhash_datasets.leakage`).

    Returns
    -------
    PairedDataset
        ``ids`` = image file names without ``.png``, ``texts`` = report text, ``image_paths``; database =
        train + validation. ``info`` records the split sizes in reports and the option values. ``skipped``
        counts: ``duplicate report``, ``empty report text``, ``no label`` (no heading in the top N),
        ``no image``, ``no frontal image``, ``extra frontal view``, ``duplicate image``, ``missing image file``,
        ``unreadable image``, ``duplicate image across splits``; ``skipped_items`` names each (report uid or
        image id, split, source XML file or CSV row, image path). ``leakage`` holds the leakage findings.

    Raises
    ------
    DatasetError
        If no layout is found, a file is malformed, an option is bad, ``views=frontal`` is asked of an XML
        release without ``indiana_projections.csv``, or (``require_images`` true) no image is present.
    """
    scheme = label_scheme or "mesh-major"
    if scheme not in OPENI_SCHEMES:
        raise DatasetError(f"openi: unknown label scheme {scheme!r}; valid: {', '.join(OPENI_SCHEMES)}")
    opts = parse_options("openi", options, OPENI_OPTIONS)
    fractions = _parse_split(opts["split"])
    base = require_dir(data_root, OPENI_SUBDIRS, "openi", OPENI_HOW_TO_GET, markers=OPENI_MARKERS)
    has_xml = (base / "ecgen-radiology").is_dir() or (base / "NLMCXR_reports" / "ecgen-radiology").is_dir()
    layout = opts["layout"] if opts["layout"] != "auto" else ("xml" if has_xml else "csv")
    if layout == "xml" and not has_xml:
        raise DatasetError(f"openi: layout=xml but {base}/ecgen-radiology/ not found. {OPENI_HOW_TO_GET}")
    if layout == "csv" and opts["mesh"] != "major":
        raise DatasetError("openi: option mesh=major+automatic needs the XML release (the CSV has major terms only)")

    skipped = SkipCounter()
    if layout == "xml":
        reports, has_views, source_files = _reports_from_xml(base)
        if opts["views"] == "frontal" and not has_views:
            raise DatasetError(
                f"openi: views=frontal needs each image's projection, which the XML release lacks: place "
                f"indiana_projections.csv in {base} or pass --dataset-option views=all"
            )
        image_candidates = [base / "NLMCXR_png", base / "images"]
    else:
        reports = _reports_from_csv(base)
        source_files = [base / "indiana_reports.csv", base / "indiana_projections.csv"]
        image_candidates = [base / "images" / "images_normalized", base / "images_normalized", base / "images"]
    if opts["images_dir"]:
        given = Path(opts["images_dir"]).expanduser()
        image_dir = given if given.is_absolute() else base / given
    else:
        image_dir = next((c for c in image_candidates if c.is_dir()), image_candidates[0])

    # One record per report: text and label headings. The vocabulary is counted over every report with text,
    # so it does not depend on the view choice or on which images are present.
    first_seen: dict[str, str] = {}
    texted: list[tuple[OpeniReport, str, list[str]]] = []
    spelling: dict[str, Counter[str]] = {}
    for rep in reports:
        if rep.uid in first_seen:
            skipped.add("duplicate report", rep.uid, source=rep.source, detail=f"first at {first_seen[rep.uid]}")
            continue
        first_seen[rep.uid] = rep.source
        text = _report_text(rep, opts["text_field"])
        if not text:
            skipped.add("empty report text", rep.uid, source=rep.source, detail=f"text_field={opts['text_field']}")
            continue
        terms = rep.mesh_major + (rep.mesh_automatic if opts["mesh"] == "major+automatic" else [])
        keys: list[str] = []
        for term in terms:
            heading = normalise_heading(term)
            key = heading.casefold()
            if not heading or key in NON_HEADINGS:
                continue
            spelling.setdefault(key, Counter())[heading] += 1
            if key not in keys:
                keys.append(key)
        texted.append((rep, text, keys))

    vocab_keys = top_n_vocabulary((r[2] for r in texted), opts["top_n"])
    in_vocab = set(vocab_keys)
    display = {k: sorted(spelling[k].items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for k in vocab_keys}

    # Reports with a label are split first (seeded, by report), so a report's split does not depend on the
    # view choice or on which images are present; then each report contributes its chosen images.
    labelled: list[tuple[OpeniReport, str, list[str]]] = []
    for rep, text, keys in texted:
        kept_keys = [k for k in keys if k in in_vocab]
        if not kept_keys:
            detail = "no MeSH heading" if not keys else f"no MeSH heading among the top {opts['top_n']}"
            skipped.add("no label", rep.uid, source=rep.source, detail=detail)
            continue
        labelled.append((rep, text, kept_keys))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labelled))
    n_train = int(round(fractions[0] * len(labelled)))
    n_val = int(round(fractions[1] * len(labelled)))
    split_of = np.empty(len(labelled), dtype=object)
    split_of[order[:n_train]] = "train"
    split_of[order[n_train : n_train + n_val]] = "validation"
    split_of[order[n_train + n_val :]] = "query"

    records = ItemRecords()
    missing_images = 0
    n_candidates = 0
    first_candidate: Path | None = None
    seen_ids: dict[str, str] = {}
    for r, (rep, text, keys) in enumerate(labelled):
        split = str(split_of[r])
        where = {"split": split, "source": rep.source}
        if not rep.images:
            skipped.add("no image", rep.uid, **where)
            continue
        if opts["views"] == "frontal":
            names = [name for name, view in rep.images if view.lower() == "frontal"]
            if not names:
                views = ", ".join(sorted({view or "unknown" for _, view in rep.images}))
                skipped.add("no frontal image", rep.uid, **where, detail=f"views: {views}")
                continue
            for extra in names[1:]:
                skipped.add(
                    "extra frontal view",
                    _item_id(extra),
                    path=image_dir / extra,
                    **where,
                    detail=f"report {rep.uid} keeps {_item_id(names[0])}",
                )
            names = names[:1]
        else:
            names = [name for name, _ in rep.images]
        for name in names:
            n_candidates += 1
            first_candidate = first_candidate or image_dir / name
            item_id = _item_id(name)
            path = image_dir / name
            if item_id in seen_ids:
                skipped.add(
                    "duplicate image", item_id, path=path, **where, detail=f"also in report {seen_ids[item_id]}"
                )
                continue
            seen_ids[item_id] = rep.uid
            problem = check_image(path, opts["image_check"])
            if problem is not None:
                if opts["require_images"]:
                    skipped.add(problem, item_id, path=path, **where)
                    continue
                missing_images += 1
            records.add(item_id, text, path, split, keys, rep.uid, rep.source)

    if opts["require_images"] and n_candidates and skipped.counts["missing image file"] == n_candidates:
        raise DatasetError(
            f"openi: none of the {n_candidates} images is present in {image_dir} (e.g. {first_candidate}). "
            f"{OPENI_HOW_TO_GET} Pass --dataset-option images_dir=PATH if they are elsewhere, or "
            "require_images=false to load reports and labels only (statistics, no image features)."
        )
    if not records:
        raise DatasetError(f"openi: no usable item under {base} (skipped: {skipped.as_dict()})")
    records, leakage = audit_splits(records, opts, skipped, dataset="openi", case_kind="report (uid)")
    reports_per_split = {s: len({c for c, g in zip(records.cases, records.groups) if g == s})
                         for s in ("train", "validation", "query")}  # fmt: skip
    return PairedDataset(
        name="openi",
        ids=records.ids,
        labels=multi_hot(records.label_sets, vocab_keys),
        label_names=[display[k] for k in vocab_keys],
        splits=split_indices(records.groups),
        label_scheme=f"{scheme}-top{opts['top_n']}",
        db_includes_train=True,
        texts=records.texts,
        image_paths=records.paths,
        skipped=skipped.as_dict(),
        skipped_items=skipped.items,
        leakage=leakage,
        info={
            **opts,
            "source": str(base),
            "source_files": [str(p) for p in source_files],
            "layout": layout,
            "images_dir": str(image_dir),
            "split": f"seeded by report (seed {seed}), train,validation,query percentages {opts['split']}",
            "reports_per_split": reports_per_split,
            "missing_images": missing_images,
        },
    )
