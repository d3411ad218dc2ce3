"""Report section: global against local similarity (Figure 3B)."""

from __future__ import annotations

from cossl_analysis.analyses.similarity import SimilarityResult, similarity_from_features
from cossl_analysis.config import SimilarityConfig
from cossl_analysis.errors import AnalysisError
from cossl_analysis.registry import analysis
from cossl_analysis.report.files import save_figure, write_json, write_pairs
from cossl_analysis.report.loading import Model
from cossl_analysis.report.session import FigureRef, Section, Session, Table, pm
from cossl_analysis.viz import similarity as viz

MODES = {"random": "one random position in each image", "same": "mean over same positions",
         "all": "mean over all position pairs"}


def _check(session: Session) -> None:
    if len(session.data) < 2:
        raise AnalysisError("the similarity analysis needs images=2 or more")


@analysis("similarity", title="Global against local similarity (Figure 3B)", config=SimilarityConfig, check=_check,
          help="global against local cosine similarity and Pearson C (Figure 3B)",
          writes="`similarity/similarity.png`, `similarity/similarity.csv` (every pair), `similarity/similarity.json`")
def similarity_section(session: Session) -> Section:
    cfg, seed = session.config.similarity, session.config.seed
    params = {"mode": cfg.mode, "max_pairs": cfg.max_pairs, "seed": seed}

    def result(m: Model) -> SimilarityResult:
        record = session.cached(m, "similarity", params, lambda: similarity_from_features(
            *session.features(m), mode=cfg.mode, seed=seed, max_pairs=cfg.max_pairs).to_dict())  # type: ignore[arg-type]
        return SimilarityResult.from_dict(record)

    results = {m.label: result(m) for m in session.models}
    c = session.per_group(lambda m: results[m.label].pearson_c)
    intra = session.per_group(lambda m: results[m.label].intra_local_mean)
    first = {g: results[models[0].label] for g, models in session.groups().items()}
    png = session.path("similarity", "similarity.png")
    titles = {g: f"{g}: C = {pm(c[g], digits=2)}" for g in first}
    save_figure(viz.plot_similarity_panels(first, seed=seed, titles=titles), png, dpi=120)
    write_pairs(results, session.path("similarity", "similarity.csv"))
    summaries = {label: r.summary() for label, r in results.items()}
    write_json(summaries, session.path("similarity", "similarity.json"))
    rows = [[g, str(len(c[g])), pm(c[g]), pm(intra[g]), str(first[g].summary()["num_pairs"])] for g in c]
    return Section(
        text=[f"For every pair of evaluation images: cosine similarity of their global representations against "
              f"that of their local representations ({cfg.mode} mode: {MODES[cfg.mode]}). C is the Pearson "
              "correlation of the two over the pairs; the dashed line is the mean cosine between distinct positions "
              "of one image. One panel per group, drawn from its first seed; C and the intra-image similarity are "
              "mean ± std over the seeds."],
        figures=[FigureRef(session.rel(png), "global against local similarity, first seed of each group")],
        tables=[Table("Pearson C and intra-image local similarity",
                      ["group", "seeds", "Pearson C", "intra-image local similarity", "pairs"], rows)],
        files=["similarity/similarity.json", "similarity/similarity.csv"],
        summary=summaries,
        headline={g: {"Pearson C": pm(c[g])} for g in c},
    )
