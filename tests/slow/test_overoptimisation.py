"""Issue 6's over-optimisation experiment on the world: against a proxy reward model trained on biased
annotators, best-of-n and PPO raise the proxy while gold rises and then falls; the watchdog and a larger
KL penalty keep gold up.

Run with: python -m pytest -m slow tests/slow/test_overoptimisation.py (about 15 minutes on 2 cores:
a proxy reward model, best-of-64 on 200 prompts, three 400-step PPO runs). The README's table comes
from the full experiment: tether experiment overoptimisation --out runs/overoptimisation.
"""

import pytest

from tether.pipelines.overoptimisation import OveroptimisationConfig, Variant, _moving_mean
from tether.pipelines.overoptimisation import run as experiment


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_gold_rises_then_falls_while_the_proxy_keeps_rising_and_mitigations_hold_it(tmp_path):
    watchdog = Variant(name="watchdog", set=["watch.gold_drop=0.1", "watch.window=5", "watch.patience=3",
                                             "watch.action=rollback"])
    cfg = OveroptimisationConfig(out=str(tmp_path), rms={"proxy": []},
                                 variants=[Variant(name="ppo"), watchdog,
                                           Variant(name="kl", set=["loss.kl_coef=0.1"])])
    results = experiment(cfg)

    bon = results["best_of_n"]
    assert max(r["gold"] for r in bon) - bon[-1]["gold"] >= 0.05, bon   # best-of-64 is past gold's peak

    curve = results["ppo"]["ppo"]["curve"]
    gold, proxy = _moving_mean([r["gold"] for r in curve], 5), _moving_mean([r["proxy"] for r in curve], 5)
    peak = max(range(len(gold)), key=gold.__getitem__)
    assert gold[-1] <= gold[peak] - 0.25, (gold[peak], gold[-1])        # gold falls from its peak ...
    assert proxy[-1] > proxy[peak] + 0.1, (proxy[peak], proxy[-1])       # ... while the proxy keeps rising

    final = {name: v["final"] for name, v in results["ppo"].items()}
    assert results["ppo"]["watchdog"]["watch"]["rolled_back_to"] is not None
    for kept in ("watchdog", "kl"):  # held-out gold of the final policy, intervals apart
        assert final[kept]["gold_ci"][0] > final["ppo"]["gold_ci"][1], final
