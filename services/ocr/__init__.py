"""The ocr service (`bmc.ocr.v1.OcrService`)."""
