//! `hecate gc`: find and stop MorphCloud instances tagged by Hecate.
