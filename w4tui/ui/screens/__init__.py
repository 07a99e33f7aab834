"""The main screen and the modal dialogs (confirm, text input, text view, stage form, prompt, help)."""
