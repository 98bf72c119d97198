"""The benchmark's aggregation: rows measured in interleaved rounds merge into one row per configuration."""

from gsau.bench import merge_rounds


def _row(model, step, users_s, rss, **extra):
    return {"model": model, "variant": "gsau", "seconds_per_step": step, "steps_per_epoch": 100,
            "seconds_per_epoch": step * 100, "eval_users_per_second": users_s, "peak_rss_mib": rss, **extra}


def test_rounds_merge_to_medians_per_configuration():
    rounds = [
        [_row("sasrec", 0.10, 900, 800, valid_ndcg=0.015), _row("lightgcn", 0.030, 1500, 600)],
        [_row("sasrec", 0.30, 1000, 850), _row("lightgcn", 0.020, 1200, 650)],  # a slow spell on sasrec
        [_row("sasrec", 0.12, 1100, 820), _row("lightgcn", 0.025, 1300, 640)],
    ]
    sasrec, lightgcn = merge_rounds(rounds)
    assert sasrec["seconds_per_step"] == 0.12 and sasrec["seconds_per_step_all"] == [0.10, 0.30, 0.12]
    assert abs(sasrec["seconds_per_epoch"] - 12.0) < 1e-9
    assert sasrec["eval_users_per_second"] == 1000 and sasrec["peak_rss_mib"] == 850
    assert sasrec["valid_ndcg"] == 0.015 and sasrec["rounds"] == 3  # first round's accuracy kept
    assert lightgcn["seconds_per_step"] == 0.025 and lightgcn["peak_rss_mib"] == 650
