"""The training loop's reports as a person reads them in the log."""

from stages.train.callbacks import CallbackList, LogLineCallback, train_line

REPORT = {
    "step": 40,
    "total_steps": 120,
    "epoch": 0.6667,
    "loss": 1.23456,
    "learning_rate": 0.000196,
    "grad_norm": 0.41234,
    "tokens_per_second": 1234.4,
    "eta_s": 250.2,
    "device": "mps",
}


def test_a_report_is_one_line_like_the_hf_trainers():
    assert train_line(REPORT) == (
        "step 40/120 (33%) | epoch 0.67 | loss 1.2346 | lr 1.96e-04 | grad_norm 0.412 | 1,234 tok/s | ETA 4m10s"
    )
    # fp16 overflow steps have no grad norm
    assert "grad_norm" not in train_line({**REPORT, "grad_norm": None})


def test_every_callback_gets_every_report_in_order():
    lines = []
    both = CallbackList([LogLineCallback(lines.append), LogLineCallback(lambda line: lines.append("2: " + line))])
    both.on_train_loss_report(REPORT)
    both.on_val_loss_report({"step": 40, "total_steps": 120, "eval_loss": 1.5})
    both.on_checkpoint({"step": 40, "total_steps": 120, "path": "/o/checkpoints/step-0000040"})
    assert lines[1] == "2: " + lines[0] and lines[2] == "step 40/120 (33%) | eval_loss 1.5000"
    assert lines[4] == "step 40/120 (33%) | checkpoint saved: /o/checkpoints/step-0000040" and len(lines) == 6
