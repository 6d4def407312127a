"""The ocr service end to end over gRPC, in process, with the real Tesseract."""
