"""The declarations of the training parameters, one module per tab (in kohya_ss order);
trainer.config.TrainConfig combines them. Each field is declared once, here."""
