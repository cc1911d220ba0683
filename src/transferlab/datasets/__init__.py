"""Getting data: where datasets come from (generated, torchvision, folders, archives) and how
every image is decoded once into the arrays the rest of the pipeline reads (`download` stage)."""
