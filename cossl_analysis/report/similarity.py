"""Report section: global against local similarity (Figure 3B)."""

from __future__ import annotations

from cossl_analysis.analyses.similarity import SimilarityResult, similarity_from_features
from cossl_analysis.errors import AnalysisError
from cossl_analysis.registry import section
from cossl_analysis.report.files import save_figure, write_json, write_pairs
from cossl_analysis.report.loading import Model
from cossl_analysis.report.paired import MARGINS
from cossl_analysis.report.session import FigureRef, Metric, Section, Session, Table, pm
from cossl_analysis.viz import similarity as viz

MODES = {"random": "one random position in each image", "same": "mean over same positions",
         "all": "mean over all position pairs"}
GLOBALS = {"head": "what the probe reads (after the pool MLP where the backbone has one)",
           "pooled": "the spatial mean of the map, before any pool MLP (the local representations' space)"}


def _check(session: Session) -> None:
    if len(session.data) < 3:
        raise AnalysisError(f"the similarity analysis needs images=3 or more (Pearson C needs at least 2 image pairs); "
                            f"the evaluation set has {len(session.data)}")
    session.require_map("the similarity analysis")


def global_text(session: Session, m: Model) -> str:
    """The global representation of ``similarity.global`` for ``m``, in words."""
    if session.config.similarity.global_rep == "pooled":
        return "spatial mean of the map (similarity.global=pooled)"
    return f"{m.global_description} (similarity.global=head)"


def similarity_result(session: Session, m: Model) -> SimilarityResult:
    """The similarity analysis of ``m`` with the run's settings (stored; shared with co_objective)."""
    cfg, seed = session.config.similarity, session.config.seed
    params = {"mode": cfg.mode, "max_pairs": cfg.max_pairs, "seed": seed, "global": cfg.global_rep}

    def compute() -> dict:
        glob, loc = session.features(m)
        if cfg.global_rep == "pooled":
            glob = loc.mean(dim=1)  # the spatial mean of the map: what the encoder pools before its head
        return similarity_from_features(glob, loc, mode=cfg.mode, seed=seed,  # type: ignore[arg-type]
                                        max_pairs=cfg.max_pairs).to_dict()

    return SimilarityResult.from_dict(session.cached(m, "similarity", params, compute))


@section("similarity", check=_check)
def similarity_section(session: Session) -> Section:
    cfg, seed = session.config.similarity, session.config.seed
    results = {m.label: similarity_result(session, m) for m in session.models}
    c = session.per_group(lambda m: results[m.label].pearson_c)
    intra = session.per_group(lambda m: results[m.label].intra_local_mean)
    firsts = {g: models[0] for g, models in session.groups().items()}
    first = {g: results[m.label] for g, m in firsts.items()}
    png = session.path("similarity", "similarity.png")
    c_text = {g: pm(c[g], digits=2) for g in c}
    titles = {g: (f"{g}: " + ("C undefined (see the table)" if c_text[g] == "-" else f"C = {c_text[g]}")
                  + (f" over {len(c[g])} seeds" if len(c[g]) > 1 else "")
                  + (f"\nscatter: {m.label} (first seed)" if len(c[g]) > 1 else f"\nscatter: {session.series_name(g)}")
                  + f"\nglobal: {global_text(session, m)}") for g, m in firsts.items()}
    save_figure(viz.plot_similarity_panels(first, seed=seed, titles=titles), png, dpi=120)
    write_pairs(results, session.path("similarity", "similarity.csv"))
    summaries = {label: {**r.summary(), "global": cfg.global_rep} for label, r in results.items()}
    write_json(summaries, session.path("similarity", "similarity.json"))
    rows = [[g, str(len(c[g])), pm(c[g]), pm(intra[g]), str(first[g].num_images), str(first[g].summary()["num_pairs"])]
            for g in c]
    undefined = [f"{m.label}: {results[m.label].note}" for m in session.models if results[m.label].note]
    globals_used = sorted({global_text(session, m) for m in session.models})
    return Section(
        text=[f"For every pair of evaluation images: cosine similarity of their global representations against "
              f"that of their local representations ({cfg.mode} mode: {MODES[cfg.mode]}). Global representation: "
              f"{GLOBALS[cfg.global_rep]}; here {'; '.join(globals_used)}. C is the Pearson correlation of the "
              "two over the pairs; the dashed line is the mean cosine between distinct positions of one image. "
              "One panel per group: its scatter is the group's first seed, while C and the intra-image similarity "
              "are mean ± std over the seeds."],
        figures=[FigureRef(session.rel(png), "global against local similarity; each scatter is its group's first "
                           "seed, C is over the seeds")],
        tables=[Table("Pearson C and intra-image local similarity",
                      ["group", "seeds", "Pearson C", "intra-image local similarity", "images", "pairs"], rows,
                      ("Pearson C is undefined (shown as -, null in the JSON files) for " + "; ".join(undefined) + "."
                       if undefined else ""))],
        files=["similarity/similarity.json", "similarity/similarity.csv"],
        summary=summaries,
        metrics=[Metric("Pearson C", {m.label: results[m.label].pearson_c for m in session.models},
                        margin=MARGINS["cosine"])],
    )
