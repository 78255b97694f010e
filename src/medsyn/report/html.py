"""`build_report(run_dir)`: report.html (self-contained, figures inline) and summary.md from a run folder's files."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from medsyn.fileio import read_json, write_text
from medsyn.generators import generator_folder
from medsyn.report import figures
from medsyn.report.verdict import comparisons, headline, sentence

TABLE_METRICS = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1")
GRID_PER_CLASS = 10
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.verdict{padding:.8em 1em;
border-left:5px solid #888;background:#f7f7f7;margin:.5em 0}.better{border-color:#2a2}.worse{border-color:#c22}
.none{border-color:#c80}
.note{color:#555;font-size:12px}img{max-width:100%}.grids{display:flex;gap:2em;flex-wrap:wrap}"""


def build_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    run = _RunFiles(run_dir)
    sections = [_verdict_section(run), _curve_section(run), _data_section(run), _generator_sections(run), _arm_section(run),
                _comparison_section(run), _exposure_section(run), _curves_section(run), _audit_section(run),
                _timing_section(run)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>medsyn report: {html.escape(run_dir.name)}"
            f"</title><style>{CSS}</style></head><body>{_warning_banners(run)}<h1>medsyn report</h1>"
            f"<p class='note'>run folder {html.escape(str(run_dir.resolve()))}; preset {run.config.get('preset')}; "
            f"data {html.escape(str(run.data.get('source')))}. Every classifier number is measured on the held-out "
            f"real TEST split, which no training or model choice saw.</p>{''.join(sections)}</body></html>")
    write_text(run_dir / "report.html", page)
    write_text(run_dir / "summary.md", _summary_markdown(run))
    return run_dir / "report.html"


def data_warnings(data: dict) -> list[str]:
    """The data's warnings (data.json `warnings`: a leak allowed with --allow-leak, patient ids shared across the
    given splits), which head every page of the report and summary.md."""
    return list(data.get("warnings") or [])


def _warning_banners(run: "_RunFiles") -> str:
    return "".join(f"<div class='verdict worse'><b>Warning:</b> {html.escape(w)}</div>" for w in data_warnings(run.data))


class _RunFiles:
    """The run folder's JSON files, read once."""

    def __init__(self, root: Path):
        self.root = root
        self.config = read_json(root / "config.json", {"arms": list, "seeds": list})
        self.data = read_json(root / "data.json", {"class_names": list, "source": str})
        self.results = read_json(root / "results.json", {
            "arms": dict, "split": str, "n_test": int, "replicates": list, "comparisons": list,
            "ci_level": (int, float)})
        self.timings = read_json(root / "timings.json") if (root / "timings.json").exists() else {}
        self.point = root / self.results.get("folder", ".")  # the largest learning-curve point: the main verdict
        folders = [generator_folder(g, pool) for g in self.config.get("gans", []) for pool in (False, True)]
        self.generators = [f"{g}/{k.name}" for g in folders if (self.point / "gan" / g).is_dir()
                           for k in sorted((self.point / "gan" / g).glob("g*")) if k.is_dir()]
        self.class_names = self.data["class_names"]


# ---------------------------------------------------------------- sections

def _verdict_section(run: _RunFiles) -> str:
    r = run.results
    rows = comparisons(r, "auc")
    items = "".join(f"<li class='{_verdict_class(c)}'>{html.escape(sentence(c, r))}</li>"
                    for c in rows + comparisons(r, "auc", pseudo=True))
    kind = "better" if any(c["verdict"].startswith("improved") for c in rows) else \
        "worse" if any(c["verdict"].startswith("worse") for c in rows) else "none"
    return (f"<h2>Verdict</h2>{_sensitivity_banner(r)}<div class='verdict {kind}'>{html.escape(headline(r, 'auc'))}"
            f"</div><ul>{items}</ul>"
            f"<p class='note'>Each arm with synthetic images is compared with its matched control, the arm that "
            f"differs from it only by the synthetic images, on the same replicates (a replicate = one classifier "
            f"seed and one generator). Differences are the mean over generators of the paired test-AUC "
            f"difference; CI: {html.escape(r['ci_method'])}; it covers new generators, new seeds and a new test "
            f"sample. {html.escape(r['multiplicity'])}. Verdicts read that adjusted CI: improved / worse when it "
            f"excludes 0 ('by less than min_effect' when it also lies within ±{r['min_effect']:g}); no difference "
            f"when it lies within ±{r['min_effect']:g}; inconclusive otherwise.</p>")


def _sensitivity_banner(r: dict) -> str:
    """Before any other verdict: whether the positive control saw help at the smallest size."""
    text = sensitivity_text(r)
    if not text:
        return ""
    kind = "better" if r["sensitivity"]["sees_help"] else "worse"
    return f"<div class='verdict {kind}'>{html.escape(text)}</div>"


def sensitivity_text(r: dict) -> str:
    """The positive control's result at the smallest size in words ("" without a positive control)."""
    sensitivity = r.get("sensitivity") or {}
    if sensitivity.get("sees_help") is None:
        return ""
    smallest = min(sensitivity["points"], key=lambda p: p["n_train"])
    effect = "n/a" if smallest["ci_low"] is None else \
        f"{smallest['diff']:+.3f} [{smallest['ci_low']:+.3f}, {smallest['ci_high']:+.3f}]"
    if sensitivity["sees_help"]:
        return (f"Positive control: {smallest['arm']} improved test AUC at {smallest['n_labelled']} labelled images "
                f"({effect}): this study can see help where help is certain.")
    return (f"THE STUDY CANNOT SEE HELP: the positive control {smallest['arm']} (real images from outside the subset, "
            f"as a perfect generator would give) did not improve test AUC significantly at {smallest['n_labelled']} "
            f"labelled images ({effect}, {smallest['verdict']}). A 'no difference' or 'inconclusive' verdict on "
            f"synthetic images below says nothing about whether they could help.")


def _curve_section(run: _RunFiles) -> str:
    """The learning curve over real-data size: a verdict per size, the curves, and the worth of each synthetic arm
    in real images."""
    curve = run.results.get("curve")
    if not curve:
        return ""
    verdicts = "".join(f"<li><b>{p['n_labelled']} labelled images</b> ({p['n_train']} train: "
                       f"{', '.join(map(str, p['per_class']))} per class; {p['n_val']} val): "
                       f"{html.escape(headline(p, 'auc'))}</li>" for p in curve)
    figs = "".join(f"<img src='{figures.learning_curves(curve, m)}'>" for m in ("auc", "balanced_accuracy"))
    rows = [[w["arm"], w["control"], w["n_labelled"], w["n_synthetic"], _worth_text(w)]
            for w in run.results["worth"] if w["metric"] == "auc"]
    table = _table(["arm", "read off", "labelled images", "extra images drawn",
                    "worth in labelled images (test AUC) [95% CI]"], rows)
    val = ("each size's val split is a nested, stratified, patient-grouped subset of val in the same proportion to "
           "its train subset as in the full data" if run.results.get("val_scaled", True) else
           "every size was validated on the WHOLE val split (--full-val): optimistic at small sizes, since no user "
           "with that little labelled data has that much validation data")
    return (f"<h2>Learning curve over labelled-data size</h2><p class='note'>Nested, stratified, patient-grouped "
            f"subsets of the real train split (imbalance {run.results.get('imbalance', 1.0):g}); {val}; the test "
            f"split untouched; generators trained on each subset only. Sizes count the labelled images used (train "
            f"+ val). Worth: the number of labelled images with which the arm's matched control reaches the same "
            f"mean test AUC (an isotonic fit on a log scale); 95% CI from the same variance model as the verdicts "
            f"(generators, seeds and test sampling), drawn independently per point: conservative.</p>"
            f"<ul>{verdicts}</ul>{figs}{table}{_efficiency_table(curve)}")


def _efficiency_table(curve: list[dict]) -> str:
    """Each synthetic arm's gain as a share of the positive control's gain, per size."""
    rows = [[p["n_labelled"], e["arm"], e["positive_control"], _efficiency_text(e)]
            for p in curve for e in p.get("efficiency", []) if e["metric"] == "auc"]
    if not rows:
        return ""
    return ("<h3>Generator efficiency</h3><p class='note'>The arm's test-AUC gain over its control divided by the "
            "positive control's gain at the same dose (1 = as good as real images from outside the subset, 0 = no "
            "help); 95% CI by the delta method, given where the positive control's gain is significant.</p>"
            + _table(["labelled images", "arm", "positive control", "efficiency [95% CI]"], rows))


def _efficiency_text(e: dict) -> str:
    if e["ci_low"] is None:
        return e["note"] or ""
    return f"{e['efficiency']:.2f} [{e['ci_low']:.2f}, {e['ci_high']:.2f}]"


def _worth_text(w: dict) -> str:
    ends = ["open" if v is None else f"{v:.0f}" for v in (w["ci_low"], w["ci_high"])]
    ci = f"[{ends[0]}, {ends[1]}]"
    if w["beyond"] == "above":
        return f"more than {w['bound']:.0f} (beyond the largest size) {ci}"
    if w["beyond"] == "below":
        return f"fewer than {w['bound']:.0f} (below the smallest size) {ci}"
    return f"about {w['worth']:.0f} {ci}"


def _verdict_class(c: dict) -> str:
    return {"improved": "better", "worse": "worse"}.get(c["verdict"], "none")


def _data_section(run: _RunFiles) -> str:
    d = run.data
    rows = [[split] + counts + [sum(counts)] for split, counts in d["counts"].items()]
    table = _table(["split (used)"] + run.class_names + ["total"], rows)
    given = d.get("given_counts")
    if given and given != d["counts"]:
        table = _table(["split (as given)"] + run.class_names + ["total"],
                       [[s] + c + [sum(c)] for s, c in given.items()]) + table
    dup, patients = d["duplicates"], d["patients"]
    within = ", ".join(f"{split} {n}" for split, n in dup["groups_within_split"].items())
    if patients["known"]:
        shared = ", ".join(f"{pair.replace('&', ' and ')} {n}" for pair, n in patients["shared_across_splits"].items())
        per_split = ", ".join(f"{split} {n}" for split, n in patients["n_patients"].items())
        patient_text = f"Patients per split: {per_split}; shared between splits: {shared}."
    else:
        patient_text = "The source gives no patient ids, so patient overlap between splits cannot be checked."
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in d.get("notes", []))
    return (f"<h2>Data</h2><p>{d['n_images']} images, {d['image_size'][0]}x{d['image_size'][1]}, {d['channels']} "
            f"channel(s), classes {', '.join(map(html.escape, run.class_names))}.</p>{table}"
            f"<p>Pixel-identical duplicate groups: within a split {within}; across splits "
            f"{dup['groups_across_splits']}. {html.escape(patient_text)}</p><ul>{notes}</ul>")


def _generator_sections(run: _RunFiles) -> str:
    from medsyn import generators, synth

    real = _real_train(run)
    real_grid = [] if real is None else [
        ("real (train split)", figures.class_grid(real.images, real.labels, len(run.class_names), GRID_PER_CLASS))]
    parts = ["<h2>Generators</h2>"]
    for model in run.generators:
        synth_npz = run.point / "synthetic" / model / "synthetic.npz"
        grids = list(real_grid)
        if synth_npz.exists():
            synthetic = synth.load_synthetic(synth_npz)
            grids.append((f"synthetic ({model})", figures.class_grid(synthetic.images, synthetic.labels,
                                                                    len(run.class_names), GRID_PER_CLASS)))
        cells = "".join(f"<figure><img src='{figures.array_uri(g)}' style='image-rendering:pixelated;width:"
                        f"{min(520, g.shape[1] * 2)}px'><figcaption>{html.escape(t)}: one row per class "
                        f"({', '.join(map(html.escape, run.class_names))})</figcaption></figure>" for t, g in grids)
        log = generators.read_log(run.point / "gan" / model)
        curves = f"<img src='{figures.loss_curves(log, f'{model} training losses')}'>" if log else ""
        record = run.point / "gan" / model / "config.json"
        source = learned_from_text(read_json(record).get("learned_from")) if record.exists() else ""
        parts.append(f"<h3>{html.escape(model)}</h3><p>{html.escape(source)}</p><div class='grids'>{cells}</div>{curves}"
                     f"{_guidance_table(run.point / 'synthetic' / model / 'guidance.json')}")
    return "".join(parts)


def learned_from_text(record: dict | None) -> str:
    """A generator's `learned_from` record in words: labelled images, unlabelled images, starting weights."""
    if not record:
        return "Learned from: not recorded (a generator trained before medsyn recorded it)."
    pool = record["unlabelled_images"]
    unlabelled = "no unlabelled images" if pool is None else (
        f"{pool['n_kept']} of {pool['n_pool']} unlabelled images from {pool['source']} (per class "
        f"{pool['kept_per_class']}), pseudo-labelled by {pool['labeller']}: {pool['rule']}")
    start = record["starting_weights"]
    weights = "fresh weights" if start == "none" else (
        f"starting weights {start['path']} (sha256 {start['sha256'][:16]}..., {start['model']} trained on "
        f"{start['data_source']}; classes {start['classes']}; fine-tuned: {start['fine_tuning']})")
    return (f"Learned from: {record['labelled_train_images']} labelled train images ({record['labelled_source']}); "
            f"{unlabelled}; {weights}.")


def _guidance_table(path: Path) -> str:
    """How a ddpm's guidance scale was chosen on real val (synthetic/<model>/guidance.json), when it was."""
    if not path.exists():
        return ""
    choice = read_json(path)
    if choice["chosen"] is None:
        return f"<p class='note'>Guidance scale not chosen on val: {html.escape(choice['not_chosen'])}.</p>"
    rows = [[f"{r['guidance']:g}" + (" (chosen)" if r["guidance"] == choice["chosen"] else ""),
             *(f"{r[m]:.3f}" for m in ("label_fidelity", "precision", "recall", "score"))] for r in choice["scales"]]
    if choice.get("reference"):
        rows.append(["real train images", *(f"{choice['reference'][m]:.3f}"
                                            for m in ("label_fidelity", "precision", "recall", "score"))])
    return (f"<p class='note'>Guidance scale chosen on {html.escape(choice['measured_against'])}, "
            f"{', '.join(map(str, choice['per_class']))} images per class at each scale: "
            f"{html.escape(choice['rule'])}.</p>"
            + _table(["guidance", "label fidelity", "precision", "recall", "score"], rows))


def _real_train(run: _RunFiles):
    from medsyn import data
    from medsyn.config import DataConfig
    from medsyn.errors import MedsynError

    try:
        return data.load(run.data["source"], DataConfig(**run.config["data"])).subset("train")
    except MedsynError:
        return None  # the source moved: the report still renders, without the real grid


def _arm_section(run: _RunFiles) -> str:
    r = run.results
    headers = ["arm"] + [f"{m} mean ± sd [95% CI]" for m in TABLE_METRICS]
    rows = [[arm] + [_estimate(s[m]) for m in TABLE_METRICS] for arm, s in r["arms"].items()]
    return (f"<h2>Arms on the test split</h2><p class='note'>Real TEST split, n = {r['n_test']}; mean ± "
            f"between-replicate sd over replicates {r['replicates']}; 95% CI: {html.escape(r['ci_method'])} "
            f"({r['n_bootstrap']} test resamples). Binary metrics at each run's threshold chosen on the real "
            f"validation split (Youden's J).</p>{_table(headers, rows)}")


def _comparison_section(run: _RunFiles) -> str:
    r = run.results
    parts = ["<h2>Paired differences with matched controls</h2>"]
    for metric in ("auc", "balanced_accuracy", "sensitivity", "specificity"):
        rows = comparisons(r, metric)
        rows = rows + comparisons(r, metric, pseudo=True) + comparisons(r, metric, positive=True)
        table = _table(["arm", "control", f"Δ {metric} [adjusted CI]", "generators", "between-generator sd",
                        "test-sampling sd", "p", "adjusted p", "verdict", "would be decided by"],
                       [[c["arm"], c["control"], _diff(c), c["n_clusters"], _cell(c["between_cluster_sd"]),
                         _cell(c["test_sampling_sd"]), _p(c["p_value"]), _p(c["p_adjusted"]), c["verdict"],
                         c["decided_by"] or ""] for c in rows])
        forest = [(f"{c['arm']} vs {c['control']}", c["diff"], c["ci_low"], c["ci_high"]) for c in rows
                  if c["ci_low"] is not None]
        plot = f"<img src='{figures.forest_plot(forest, metric, 'matched control')}'>" if forest and \
            metric == "auc" else ""
        parts.append(f"<h3>{html.escape(metric)}</h3>{table}{plot}")
    return "".join(parts)


def _exposure_section(run: _RunFiles) -> str:
    exposure = run.results.get("exposure")
    if not exposure:
        return ""
    rows = [[arm, _mean(e["real_passes"]), _mean(e["real_seen"]), _mean(e["synthetic_seen"]), _dose(e["dose"]),
             _mean(e["best_epoch"])] for arm, e in exposure["per_arm"].items()]
    share, cap = exposure["share_best_at_cap"], exposure["epoch_cap"]
    warning = (f"<div class='verdict worse'>{share:.0%} of the classifier runs had their best validation loss at "
               f"the last allowed epoch ({cap}): the epoch cap, not early stopping, ended them, so "
               f"they may be undertrained; raise the epochs.</div>") if share is not None and share > 0.2 else ""
    selection = (f"best epoch (of at most {cap}); {share:.0%} of runs had their best epoch at the cap" if share is not
                 None else f"kept epoch: every run trains all {cap} epochs and keeps its final weights (selection "
                           f"'last': no choice made on the val split)")
    return (f"<h2>Training exposure</h2>{warning}<p class='note'>Per arm, mean over replicates of the selected "
            f"model's real-train passes, real and extra (synthetic or held-out) images seen, the dose they achieved "
            f"(extra per real image seen; an arm @R aims at R) and {selection}.</p>"
            + _table(["arm", "real passes", "real images seen", "extra images seen", "achieved dose", "best epoch"],
                     rows))


def _dose(values: list) -> str:
    doses = [v for v in values if v is not None]
    return f"{np.mean(doses):.3f}" if doses else "-"


def _curves_section(run: _RunFiles) -> str:
    saved = run.results.get("test_curves")
    if not saved:
        return ("<h2>ROC curves and confusion matrices</h2><p class='note'>This results.json was written by a medsyn "
                "that did not record them; remove it and continue the run with --resume to rewrite it.</p>")
    curves = {arm: (np.array(c["roc_fpr"]), np.array(c["roc_tpr"]), c["roc_auc"]) for arm, c in saved["arms"].items()}
    matrices = {arm: np.array(c["confusion"]) for arm, c in saved["arms"].items()}
    roc = figures.roc_curves(curves, f"test split: ROC ({saved['roc']}) of {saved['probabilities']} probabilities")
    confusion = figures.confusion_matrices(matrices, run.class_names, f"test split, {saved['confusion']}")
    return f"<h2>ROC curves and confusion matrices</h2><img src='{roc}'><img src='{confusion}'>"


def _audit_section(run: _RunFiles) -> str:
    from medsyn.audit.run import table_rows

    parts = ["<h2>Audit of the synthetic images</h2>"]
    for model in run.generators:
        path = run.point / "audit" / model / "audit.json"
        if not path.exists():
            continue
        audit = read_json(path)
        rows = table_rows(audit)
        columns = [c for c in rows[0] if any(r.get(c) is not None for r in rows)]
        table = _table(columns, [[_audit_cell(r, c) for c in columns] for r in rows])
        used = "; ".join(f"<b>{html.escape(name)}</b>: {html.escape(info['trained_on'])}"
                         for name, info in audit["feature_extractors"].items())
        gallery = run.point / "audit" / model / "nn_gallery.png"
        image = f"<figure><img src='{figures.file_uri(gallery)}'><figcaption>best-matching synthetic / real-train " \
                f"pairs (a flip, zoom, rotation and shift allowed)</figcaption></figure>" if gallery.exists() else ""
        parts.append(f"<h3>{html.escape(model)}</h3><p class='note'>Each metric is measured against half A of the "
                     f"real TRAIN split, for the synthetic images, for the other half of real train (the "
                     f"real-vs-real floor: what real images score at this sample size) and for real val images, in "
                     f"every feature space used: {used}. Label accuracy by a classifier trained on real train, next "
                     f"to its accuracy on real val; near-copies by the best correlation with a training image over "
                     f"a left-right flip, zooms, rotations and shifts (medsyn.data.nearcopy), calibrated on real val (see audit.json). The test split "
                     f"is not used by the audit. <i>not computable</i>: the class has at most k = "
                     f"{audit['config']['k']} images on one side, too few for the nearest-neighbour metrics.</p>"
                     f"{table}{image}")
    return "".join(parts)


def _timing_section(run: _RunFiles) -> str:
    jobs = run.timings.get("jobs", {})
    kinds = list(dict.fromkeys(j["kind"] for j in jobs.values()))
    rows = [[kind, sum(j["kind"] == kind for j in jobs.values()),
             f"{sum(j['seconds'] for j in jobs.values() if j['kind'] == kind):.1f}",
             f"{sum(j['cpu_seconds'] for j in jobs.values() if j['kind'] == kind):.1f}",
             f"{max(j['peak_rss_mib'] for j in jobs.values() if j['kind'] == kind):.0f}"] for kind in kinds]
    return "<h2>Timings</h2>" + _table(["job kind", "jobs", "job seconds (sum)", "CPU seconds", "peak RSS MiB"], rows)


def _summary_markdown(run: _RunFiles) -> str:
    r = run.results
    lines = [f"> **WARNING:** {w}" for w in data_warnings(run.data)]
    lines += [""] if lines else []
    lines += ["# medsyn summary", "", f"Data: {run.data['source']}; test split n = {r['n_test']}; replicates "
             f"{r['replicates']}.", "", "## Verdict", ""]
    lines += [sensitivity_text(r), ""] if sensitivity_text(r) else []
    lines += [headline(r, "auc"), ""]
    lines += [f"- {sentence(c, r)}" for c in comparisons(r, "auc") + comparisons(r, "auc", pseudo=True)]
    lines += ["", "## Arms (real test split, mean ± between-replicate sd [95% CI])", "",
              "| arm | " + " | ".join(TABLE_METRICS) + " |", "|---" * (len(TABLE_METRICS) + 1) + "|"]
    for arm, s in r["arms"].items():
        lines.append(f"| {arm} | " + " | ".join(_estimate(s[m]) for m in TABLE_METRICS) + " |")
    return "\n".join(lines + _curve_markdown(r)) + "\n"


def _curve_markdown(r: dict) -> list[str]:
    """The learning curve as tables: test AUC per size and arm, the verdict per size, and the worth."""
    if not r.get("curve"):
        return []
    arms = list(dict.fromkeys(a for p in r["curve"] for a in p["arms"]))
    lines = ["", "## Learning curve (real test split, test AUC mean ± between-replicate sd [95% CI])", "",
             "| labelled images (train + val) | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    lines += [f"| {p['n_labelled']} ({p['n_train']} + {p['n_val']}) | "
              + " | ".join(_estimate(p["arms"][a]["auc"]) if a in p["arms"] else "-" for a in arms) + " |"
              for p in r["curve"]]
    lines += ["", "Verdict per size:", ""]
    lines += [f"- {p['n_labelled']} labelled images: {headline(p)}" for p in r["curve"]]
    lines += ["", "## Worth in labelled images (test AUC, 95% CI)", "",
              "| arm | read off | labelled images | extra images | worth in labelled images |", "|---|---|---|---|---|"]
    lines += [f"| {w['arm']} | {w['control']} | {w['n_labelled']} | {w['n_synthetic']} | {_worth_text(w)} |"
              for w in r["worth"] if w["metric"] == "auc"]
    return lines


# ---------------------------------------------------------------- formatting

def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _estimate(s: dict) -> str:
    if s["mean"] is None:
        return "n/a"
    std = f" ± {s['std']:.3f}" if s.get("std") is not None else ""
    ci = f" [{s['ci_low']:.3f}, {s['ci_high']:.3f}]" if s.get("ci_low") is not None else ""
    return f"{s['mean']:.3f}{std}{ci}"


def _diff(c: dict) -> str:
    if c["diff"] is None:
        return "n/a"
    ci = f" [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" if c.get("ci_low") is not None else ""
    return f"{c['diff']:+.3f}{ci}"


def _mean(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{sum(values) / len(values):.1f}" if values else "n/a"


def _p(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


DISTRIBUTION_METRICS = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "diversity_ratio")


def _audit_cell(row: dict, column: str) -> str:
    """A row whose distribution metrics are all missing was skipped as too small: say so, not an empty cell."""
    if column in DISTRIBUTION_METRICS and all(row.get(m) is None for m in DISTRIBUTION_METRICS):
        return "not computable"
    return _cell(row.get(column))


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "" if value is None else str(value)
